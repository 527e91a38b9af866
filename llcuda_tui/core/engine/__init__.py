"""The engine: llama.cpp in-process (local), in a child process (process), sampling, chat
templates and their sandbox, the backend llama.cpp was built with, and chat planning.

Public names are imported from here; the modules behind them are private. Exports load
their module on first use (PEP 562), so importing the package costs nothing.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from llcuda_tui.core._lazy import lazy_exports

if TYPE_CHECKING:
    from ._backend import (
        build_info as build_info,
    )
    from ._backend import (
        capture_llama_log as capture_llama_log,
    )
    from ._backend import (
        list_devices as list_devices,
    )
    from ._chat import (
        RateMeter as RateMeter,
    )
    from ._chat import (
        ReplyStream as ReplyStream,
    )
    from ._chat import (
        build_messages as build_messages,
    )
    from ._chat import (
        plan_context as plan_context,
    )
    from ._local import (
        FLASH_ATTN_AUTO as FLASH_ATTN_AUTO,
    )
    from ._local import (
        GGML_TYPES as GGML_TYPES,
    )
    from ._local import (
        Chunk as Chunk,
    )
    from ._local import (
        Engine as Engine,
    )
    from ._local import (
        EngineConfig as EngineConfig,
    )
    from ._local import (
        GenerationHandle as GenerationHandle,
    )
    from ._local import (
        GenerationRequest as GenerationRequest,
    )
    from ._local import (
        LoadInfo as LoadInfo,
    )
    from ._local import (
        RunRecord as RunRecord,
    )
    from ._local import (
        TokensFromEngine as TokensFromEngine,
    )
    from ._local import (
        check_gguf_file as check_gguf_file,
    )
    from ._local import (
        flash_attn_type as flash_attn_type,
    )
    from ._local import (
        generate_via as generate_via,
    )
    from ._local import (
        stream_via as stream_via,
    )
    from ._process import (
        FLUSH_INTERVAL_S as FLUSH_INTERVAL_S,
    )
    from ._process import (
        ProcessEngine as ProcessEngine,
    )
    from ._process import (
        last_words as last_words,
    )
    from ._process import (
        portable as portable,
    )
    from ._process import (
        read_frame as read_frame,
    )
    from ._process import (
        spawn_child as spawn_child,
    )
    from ._process import (
        write_frame as write_frame,
    )
    from ._sampling import (
        SamplingParams as SamplingParams,
    )
    from ._sampling import (
        SamplingValues as SamplingValues,
    )
    from ._sampling import (
        build_chain as build_chain,
    )
    from ._templates import (
        CHATML as CHATML,
    )
    from ._templates import (
        GEMMA as GEMMA,
    )
    from ._templates import (
        LLAMA3 as LLAMA3,
    )
    from ._templates import (
        MAX_RENDERED_CHARS as MAX_RENDERED_CHARS,
    )
    from ._templates import (
        PHI3 as PHI3,
    )
    from ._templates import (
        ChatTemplate as ChatTemplate,
    )

_EXPORTS = {
    "build_info": "_backend",
    "capture_llama_log": "_backend",
    "list_devices": "_backend",
    "RateMeter": "_chat",
    "ReplyStream": "_chat",
    "build_messages": "_chat",
    "plan_context": "_chat",
    "Chunk": "_local",
    "Engine": "_local",
    "EngineConfig": "_local",
    "FLASH_ATTN_AUTO": "_local",
    "GGML_TYPES": "_local",
    "GenerationHandle": "_local",
    "GenerationRequest": "_local",
    "LoadInfo": "_local",
    "RunRecord": "_local",
    "TokensFromEngine": "_local",
    "check_gguf_file": "_local",
    "flash_attn_type": "_local",
    "generate_via": "_local",
    "stream_via": "_local",
    "FLUSH_INTERVAL_S": "_process",
    "ProcessEngine": "_process",
    "last_words": "_process",
    "portable": "_process",
    "read_frame": "_process",
    "spawn_child": "_process",
    "write_frame": "_process",
    "SamplingParams": "_sampling",
    "SamplingValues": "_sampling",
    "build_chain": "_sampling",
    "CHATML": "_templates",
    "ChatTemplate": "_templates",
    "GEMMA": "_templates",
    "LLAMA3": "_templates",
    "MAX_RENDERED_CHARS": "_templates",
    "PHI3": "_templates",
}
__all__ = sorted(_EXPORTS)
__getattr__ = lazy_exports(__name__, _EXPORTS)
