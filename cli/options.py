"""Click options generated from the config dataclasses, so each option maps onto one field."""

import dataclasses
import typing

import click


def _click_type(annotation):
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    base = args[0] if args else annotation
    return {int: int, float: float, str: str, bool: bool}.get(base, str)


def options_from(config_cls, helps, *, skip=()):
    """Adds one `--field-name` option per dataclass field; unspecified options arrive as None.

    None means "not given", so `build_config` can layer defaults < --config file < options.
    """

    def decorate(command):
        for field in reversed(dataclasses.fields(config_cls)):
            if field.name in skip:
                continue
            flag = "--" + field.name.replace("_", "-")
            default = field.default
            help_text = f"{helps.get(field.name, '')} [default: {default}]"
            kind = _click_type(field.type)
            if kind is bool:
                option = click.option(
                    f"{flag}/--no-{flag[2:]}", field.name, default=None, help=help_text
                )
            else:
                choices = getattr(config_cls, "CHOICES", {}).get(field.name)
                if choices:
                    kind = click.Choice(choices)
                option = click.option(flag, field.name, type=kind, default=None, help=help_text)
            command = option(command)
        return command

    return decorate


config_file_option = click.option(
    "--config",
    "config_file",
    type=click.Path(dir_okay=False),
    default=None,
    help="JSON or YAML file of option values; options given here override it.",
)
"""The `--config FILE` option of the commands built from a config dataclass."""


def run_dir_option(name="run_dir", *, multiple=False, help="A detect run directory."):
    """The `--model RUN_DIR` option of the commands that read a finished detect run."""
    return click.option(
        "--model",
        name,
        multiple=multiple,
        required=True,
        type=click.Path(file_okay=False),
        help=help,
    )


def image_inputs_and_out(out_help):
    """The IMAGES argument (files or folders) and the required `--out FOLDER` that gets the output."""

    def decorate(command):
        command = click.option(
            "--out", required=True, type=click.Path(file_okay=False), help=out_help
        )(command)
        return click.argument("images", nargs=-1, required=True, type=click.Path())(command)

    return decorate


def positive_int_option(flag, help, *, default=None):
    """An option that takes a whole number of at least 1; None (not given) unless `default` is set."""
    return click.option(
        flag,
        default=default,
        show_default=default is not None,
        type=click.IntRange(min=1),
        help=help,
    )


def config_command_options(config_cls, helps, *, quiet_help=None):
    """A command's `--field` options, `--config FILE`, and (with `quiet_help`) `--quiet`."""

    def decorate(command):
        if quiet_help:
            command = click.option("--quiet", is_flag=True, help=quiet_help)(command)
        return options_from(config_cls, helps)(config_file_option(command))

    return decorate
