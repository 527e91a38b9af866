"""One module per `llcuda` subcommand group: each has ``add_parser(subparsers)``.

``add_parser`` registers its sub-parsers and sets ``func`` (``Callable[[Namespace, Settings],
int]``) on each, which returns the exit code. Commands raise ``LlcudaError`` for anything the
user should read; ``cli.main`` prints it as one line.

``cli`` imports every command module to build the parser, so a module's top level imports
only the standard library, ``core.errors`` and ``core.fmt`` (core types under
``TYPE_CHECKING``); the core a command runs is imported in its ``run``
(tests/test_import_hygiene.py checks this, bench/startup.py measures it).
"""
