"""Command groups of the `unstar` CLI; each module has register(subparsers)."""

from . import chat, compare, doctor, evaluate, export, forget, models

COMMAND_MODULES = [models, chat, doctor, export, forget, evaluate, compare]
