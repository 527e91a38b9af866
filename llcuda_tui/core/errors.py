"""Error types that the CLI and TUI turn into one clear line for the user."""

from __future__ import annotations


class LlcudaError(Exception):
    """Base class: a failure with a message fit to show the user as is.

    ``exit_code`` follows the CLI's convention: 2 for bad input, 1 for runtime failures.
    """

    exit_code = 1


class UserInputError(LlcudaError):
    """The user asked for something that cannot be done as asked (bad path, bad value)."""

    exit_code = 2


class CountUnavailable(UserInputError):
    """The engine cannot count a chat's tokens (an OpenAI-compatible server that is not an
    llcuda worker): chat without an exact context meter."""


class ConfigError(UserInputError):
    """The config file or an environment variable holds an invalid value."""


class ModelNotFoundError(UserInputError):
    """A model name or path resolves to nothing."""


class ModelLoadError(UserInputError):
    """A file exists but is not a loadable GGUF (missing, truncated, wrong magic, bad tensors)."""


class ContextLengthError(UserInputError):
    """A prompt (with what the request asks to generate) does not fit the context; the worker
    answers it with OpenAI's ``context_length_exceeded`` code, on which clients fall back."""


class GrammarError(UserInputError):
    """A grammar (GBNF) that llama.cpp's grammar sampler cannot parse."""


class EngineError(LlcudaError):
    """llama.cpp failed at run time (decode error, out of memory, ...)."""


class StoreError(LlcudaError):
    """A store (the model store, the results store) cannot do what was asked: a runtime
    failure of its files or its SQLite database."""


class PullCancelled(LlcudaError):
    """A download was stopped through its cancel event; the partial file stays and the next
    pull resumes it."""


def one_line(exc: BaseException, limit: int = 300) -> str:
    """``exc`` as one line of at most ``limit`` characters (its type when it has no text)."""
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."
