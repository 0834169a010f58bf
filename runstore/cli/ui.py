"""`runstore ui`: the web UI over the local store. Parsing only; the work is in runstore.ui."""

from __future__ import annotations

import click

from runstore.cli.base import main


@main.command()
@click.option("--port", default=8751, show_default=True, type=click.IntRange(0, 65535),
              help="Port on 127.0.0.1.")
@click.option("--open", "open_browser", is_flag=True, help="Open the UI in a web browser.")
def ui(port: int, open_browser: bool) -> None:
    """Serve the web UI over the local store (read-only; never blocks training)."""
    try:
        import uvicorn

        from runstore.ui.apps import create_local_app
        from runstore.ui.local import StoreUnreadable
    except ImportError as exc:  # pragma: no cover - depends on the installed extras
        raise click.ClickException(
            f"the UI needs the server extra ({exc.name}). Try: pip install 'runstore[server]'"
        ) from exc
    from runstore.store import default_home

    home = default_home()
    try:
        app = create_local_app(home)
    except StoreUnreadable as exc:
        raise click.ClickException(str(exc)) from exc
    # 127.0.0.1 only: the local UI has no login, so nothing but this machine may reach it.
    host = "127.0.0.1"
    url = f"http://{host}:{port}/ui/"
    click.echo(f"runstore ui on {url} (store: {home}, read-only)", err=True)
    if open_browser:
        import threading
        import webbrowser

        threading.Timer(1.0, webbrowser.open, args=(url,)).start()
    uvicorn.run(app, host=host, port=port, log_level="warning")
