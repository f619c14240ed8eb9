"""Command groups of the `unstar` CLI; each module has register(subparsers)."""

from . import chat, doctor, models

COMMAND_MODULES = [models, chat, doctor]
