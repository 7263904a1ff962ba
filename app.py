"""Launch the ForgeLLM app: `python app.py [--host 127.0.0.1] [--port 7860] [--share] [--auth USER:PASSWORD]`.

On Hugging Face Spaces the platform sets GRADIO_SERVER_NAME / GRADIO_SERVER_PORT; they are used when
no flag is given. Serving beyond this machine (`--share`, or a host that is not a loopback address) needs
a login (`--auth`, `--auth-file` or FORGELLM_AUTH) and turns Hub downloads off unless `--allow-downloads`.
Everything else lives in `forgellm.ui`.
"""

from __future__ import annotations

import argparse
import ipaddress
import os
import signal
import sys
from collections.abc import Iterable, Mapping
from pathlib import Path

# Before gradio is imported: its analytics threads can hang a firewalled machine at exit.
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("NO_PROXY", "127.0.0.1,localhost")

import forgellm  # noqa: E402 - first: it loads a fast BLAS before anything imports mlx
import forgellm.platform  # noqa: E402
from forgellm.errors import ForgeError  # noqa: E402
from forgellm.models.registry import DOWNLOADS_ENV, hub_downloads_allowed  # noqa: E402
from forgellm.paths import PROJECT_ROOT  # noqa: E402

DEFAULT_HOST = "127.0.0.1"
SESSION_CAPACITY = 256  # browser tabs and API sessions whose state is kept (the oldest is dropped beyond)
SESSIONS_ENV = "FORGELLM_MAX_SESSIONS"  # the same, for platforms that start `python app.py` without flags
DEFAULT_PORT = 7860
AUTH_ENV = "FORGELLM_AUTH"  # user:password lines, for platforms that pass secrets as variables (Spaces)
AUTH_FIX = (
    "add --auth USER:PASSWORD (repeatable) or --auth-file FILE (one user:password per line), or set "
    f"{AUTH_ENV}; or serve on 127.0.0.1 only (the default)"
)
LOGIN_FORMAT_FIX = "write each login as user:password (the password may hold colons, not line breaks)"

Credentials = list[tuple[str, str]]


def parse_args(argv: list[str] | None = None, env: Mapping[str, str] = os.environ) -> argparse.Namespace:
    """Flags first, then GRADIO_SERVER_NAME / GRADIO_SERVER_PORT, then 127.0.0.1:7860."""
    parser = argparse.ArgumentParser(description="ForgeLLM: fine-tune LLMs with MLX from a browser.")
    parser.add_argument(
        "--host", default=None, help=f"address to listen on (default {DEFAULT_HOST}: this machine only)"
    )
    parser.add_argument("--port", type=int, default=None, help=f"port (default {DEFAULT_PORT})")
    parser.add_argument("--share", action="store_true", help="also ask Gradio for a public share link")
    parser.add_argument(
        "--auth",
        action="append",
        default=[],
        metavar="USER:PASSWORD",
        help="require this login (repeatable; needed beyond this machine; other local users can see it in `ps`, "
        "so prefer --auth-file)",
    )
    parser.add_argument("--auth-file", type=Path, metavar="FILE", help="logins, one user:password per line")
    parser.add_argument(
        "--allow-downloads",
        action="store_true",
        help=f"let users download Hub models even when serving beyond this machine ({DOWNLOADS_ENV}=on)",
    )
    parser.add_argument(
        "--max-sessions",
        type=int,
        default=None,
        metavar="N",
        help=f"sessions (browser tabs, API clients) whose state is kept; beyond N the least recent is forgotten "
        f"(default {SESSION_CAPACITY}, or {SESSIONS_ENV}; about 0.5 MB each)",
    )
    args = parser.parse_args(argv)
    args.max_sessions = _max_sessions(parser, args.max_sessions, env)
    args.host_from = f"--host {args.host}" if args.host else f"GRADIO_SERVER_NAME={env.get('GRADIO_SERVER_NAME')}"
    args.host = args.host or env.get("GRADIO_SERVER_NAME") or DEFAULT_HOST
    args.port = args.port or int(env.get("GRADIO_SERVER_PORT") or DEFAULT_PORT)
    if args.auth_file is not None:
        args.auth_file = args.auth_file.resolve()  # main() changes the working directory
    return args


def _max_sessions(parser: argparse.ArgumentParser, flag: int | None, env: Mapping[str, str]) -> int:
    if flag is not None:
        value, source = flag, "--max-sessions"
    elif env.get(SESSIONS_ENV, "").strip():
        source = SESSIONS_ENV
        try:
            value = int(env[SESSIONS_ENV])
        except ValueError:
            parser.error(f"{SESSIONS_ENV}={env[SESSIONS_ENV]!r} is not a whole number: set it to e.g. 256")
    else:
        return SESSION_CAPACITY
    if value < 1:
        parser.error(f"{source} {value}: keep at least 1 session (default {SESSION_CAPACITY})")
    return value


def is_loopback(host: str) -> bool:
    """True for an address only this machine can reach (localhost, 127.0.0.0/8, ::1)."""
    if host.strip().lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip().strip("[]")).is_loopback
    except ValueError:
        return False  # a host name: it may well be reachable from elsewhere


def exposure(args: argparse.Namespace) -> str | None:
    """How the app would be reachable from other machines (e.g. "--share"), or None when it would not be."""
    if args.share:
        return "--share"
    return None if is_loopback(args.host) else args.host_from


def parse_logins(entries: Iterable[str], source: str, comments: bool = False) -> Credentials:
    """`user:password` entries as (user, password); errors name the entry's number, never its text
    (it holds a password). With `comments`, blank lines and `#` lines are skipped (a file's format)."""
    logins = []
    for number, entry in enumerate(entries, 1):
        entry = entry.strip()
        if comments and (not entry or entry.startswith("#")):
            continue
        user, colon, password = entry.partition(":")
        if not colon or not user.strip() or not password:
            raise ForgeError(
                f"entry {number} is not user:password (a user name, a colon, a non-empty password)",
                source,
                LOGIN_FORMAT_FIX,
            )
        logins.append((user.strip(), password))
    return logins


def read_logins(args: argparse.Namespace, env: Mapping[str, str]) -> Credentials:
    """Every login given by --auth, --auth-file and FORGELLM_AUTH."""
    logins = parse_logins(args.auth, "--auth")
    if args.auth_file is not None:
        try:
            text = args.auth_file.read_text(encoding="utf-8-sig")
        except OSError as e:
            raise ForgeError(f"cannot read the login file: {e.strerror}", str(args.auth_file), "check the path") from e
        logins += parse_logins(text.splitlines(), str(args.auth_file), comments=True)
    logins += parse_logins(env.get(AUTH_ENV, "").splitlines(), AUTH_ENV, comments=True)
    return logins


def launch_logins(args: argparse.Namespace, env: Mapping[str, str]) -> Credentials:
    """The logins to require; refuses to serve beyond this machine without any."""
    logins = read_logins(args, env)
    reach = exposure(args)
    if reach and not logins:
        raise ForgeError(f"serving beyond this machine ({reach}) needs a login, and none was given", fix=AUTH_FIX)
    return logins


def downloads_setting(args: argparse.Namespace, env: Mapping[str, str]) -> str | None:
    """FORGELLM_HUB_DOWNLOADS for this launch: on with --allow-downloads, off when serving beyond this
    machine (anyone who can log in could otherwise fill its disk), else None (leave the environment)."""
    if args.allow_downloads:
        return "on"
    if env.get(DOWNLOADS_ENV):
        return None  # the operator chose
    return "off" if exposure(args) else None


def _on_sigterm(signum: int, frame: object) -> None:
    # Python's default SIGTERM exits without cleanup; Gradio closes its server on KeyboardInterrupt.
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    """Build the app and serve it until interrupted (Ctrl-C or SIGTERM); 2 when the launch is refused."""
    args = parse_args(argv)
    try:
        logins = launch_logins(args, os.environ)
        setting = downloads_setting(args, os.environ)
        if setting:
            os.environ[DOWNLOADS_ENV] = setting  # read by the app and inherited by the trainers it starts
        hub_downloads_allowed()  # a mistyped value stops here, not at a user's first download
    except ForgeError as e:
        print(f"app.py: refusing to start.\n{e.message}", file=sys.stderr)
        return 2
    if logins:
        print(f"Login required ({len(logins)} user(s)).", flush=True)
    if setting == "off":
        print(f"Hub downloads are off ({DOWNLOADS_ENV}=off); --allow-downloads turns them on.", flush=True)
    # Relative model names then resolve in the project folder, as in the trainers (started there), never
    # in whatever folder the app was started from.
    os.chdir(PROJECT_ROOT)
    signal.signal(signal.SIGTERM, _on_sigterm)
    forgellm.platform.warn_if_slow()  # once, with the fix, if MLX is left on its reference BLAS
    from forgellm.ui import CSS, build_app

    try:
        demo = build_app()
        demo.queue().launch(
            server_name=args.host,
            server_port=args.port,
            share=args.share,
            css=CSS,
            auth=logins or None,
            # Gradio keeps each session's state (~0.5 MB here, measured: every API call is a new session) up
            # to this many sessions; its default of 10,000 lets memory grow by gigabytes under API use.
            state_session_capacity=args.max_sessions,
        )
    except KeyboardInterrupt:
        pass  # a signal before the server was up: nothing to close
    return 0


if __name__ == "__main__":
    sys.exit(main())
