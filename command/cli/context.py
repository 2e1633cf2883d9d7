"""The command group and what every subcommand shares: the settings, built
once from the environment with the group's options laid over it."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from turnout.core.routes import RouteTable, compose
from turnout.core.settings import Settings, load_settings

if TYPE_CHECKING:
    from turnout.client import Client


@dataclass
class Context:
    # Options given on the command line (or by their environment variables);
    # pydantic validates them with the rest of the settings.
    overrides: dict[str, Any] = field(default_factory=dict)
    _settings: Settings | None = None

    def settings(self, **more: Any) -> Settings:
        if more:
            return load_settings(**self.overrides, **{k: v for k, v in more.items() if v is not None})
        if self._settings is None:
            self._settings = load_settings(**self.overrides)
        return self._settings

    def client(self) -> Client:
        """The API client for commands that talk to a running stack."""
        from turnout.client import Client

        settings = self.settings()
        key = settings.api_key.get_secret_value() if settings.api_key else ""
        return Client(settings.api_url, key, retry_refused=False, unreachable_hint=(
            "is the stack up? Point the command at the API with TURNOUT_URL=http://host:port, "
            f"or use the TURNOUT_HOME of the `turnout up` that serves it (this one: "
            f"{settings.home}, where it records {settings.api_file.name})"))

    def table(self) -> RouteTable:
        settings = self.settings()
        return compose(settings.routes_file, settings.models_dir)[1]

    def logging(self) -> None:
        logging.basicConfig(
            level=self.settings().log_level.upper(),
            format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        )


pass_context = click.make_pass_decorator(Context)


@click.group(context_settings={"help_option_names": ["-h", "--help"], "show_default": True})
@click.option("--home", type=click.Path(path_type=Path), envvar="TURNOUT_HOME", show_envvar=True,
              help="State folder: Redis data, logs, generated passwords.")
@click.option("--routes", "routes_file", type=click.Path(path_type=Path),
              envvar="TURNOUT_ROUTES_FILE", show_envvar=True,
              help="The route table (default: configs/routes.yaml).")
@click.option("--models-dir", type=click.Path(path_type=Path), envvar="TURNOUT_MODELS_DIR",
              show_envvar=True, help="Model artifacts (default: models/).")
@click.option("--log-level", envvar="TURNOUT_LOG_LEVEL", show_envvar=True,
              type=click.Choice(["DEBUG", "INFO", "WARNING", "ERROR"], case_sensitive=False),
              help="Log level (default: INFO).")
@click.version_option(package_name="turnout")
@click.pass_context
def cli(ctx: click.Context, **options: Any) -> None:
    """Turnout: a GPU-aware, multi-queue inference router on Celery and Redis.

    Every setting is a TURNOUT_* environment variable (the README lists them);
    the options here override them for one command.
    """
    ctx.obj = Context(overrides={k: v for k, v in options.items() if v is not None})
