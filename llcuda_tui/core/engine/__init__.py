"""The engine: one typed protocol and base for every engine (protocol), the types they take
and give (types), llama.cpp in-process (local) and in a child process (process), what both
llama.cpp decode loops share (decoding), sampling, chat templates and their sandbox, the backend
llama.cpp was built with. (Chat planning and the reply buffer are in ``core/chat.py``.)

Public names are imported from here; the modules behind them are private. Exports load
their module on first use (PEP 562), so importing the package costs nothing.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from llcuda_tui.core._lazy import lazy_exports

if TYPE_CHECKING:
    from ._backend import (
        BuildInfo as BuildInfo,
    )
    from ._backend import (
        build_info as build_info,
    )
    from ._backend import (
        capture_llama_log as capture_llama_log,
    )
    from ._backend import (
        list_devices as list_devices,
    )
    from ._decoding import (
        LogprobTrail as LogprobTrail,
    )
    from ._decoding import (
        StopMatcher as StopMatcher,
    )
    from ._decoding import (
        check_decode as check_decode,
    )
    from ._decoding import (
        decode_error as decode_error,
    )
    from ._decoding import (
        finish_run as finish_run,
    )
    from ._decoding import (
        logprobs_at as logprobs_at,
    )
    from ._embed import (
        EMBED_POOLINGS as EMBED_POOLINGS,
    )
    from ._embed import (
        Embedder as Embedder,
    )
    from ._embed import (
        Embeddings as Embeddings,
    )
    from ._embed import (
        EmbeddingsUnavailable as EmbeddingsUnavailable,
    )
    from ._embed import (
        declared_pooling as declared_pooling,
    )
    from ._grammar import (
        json_object_grammar as json_object_grammar,
    )
    from ._grammar import (
        json_schema_grammar as json_schema_grammar,
    )
    from ._grammar import (
        tool_call_grammar as tool_call_grammar,
    )
    from ._kvcache import (
        Reuse as Reuse,
    )
    from ._kvcache import (
        SeqCells as SeqCells,
    )
    from ._kvcache import (
        StatePersistence as StatePersistence,
    )
    from ._kvcache import (
        keep_prefix as keep_prefix,
    )
    from ._kvcache import (
        n_swa_of as n_swa_of,
    )
    from ._kvcache import (
        persistence_for as persistence_for,
    )
    from ._kvstore import (
        KvStateError as KvStateError,
    )
    from ._kvstore import (
        KvStateStore as KvStateStore,
    )
    from ._kvstore import (
        SavedState as SavedState,
    )
    from ._kvstore import (
        layout_fingerprint as layout_fingerprint,
    )
    from ._limits import (
        apply_rope as apply_rope,
    )
    from ._limits import (
        check_memory as check_memory,
    )
    from ._limits import (
        rope_scaling_for as rope_scaling_for,
    )
    from ._loadlog import (
        FLASH_ATTN_AUTO as FLASH_ATTN_AUTO,
    )
    from ._loadlog import (
        flash_attn_for as flash_attn_for,
    )
    from ._loadlog import (
        flash_attn_type as flash_attn_type,
    )
    from ._loadlog import (
        rope_freq_scale as rope_freq_scale,
    )
    from ._local import (
        Engine as Engine,
    )
    from ._local import (
        check_gguf_file as check_gguf_file,
    )
    from ._prefill import (
        PrefillPlan as PrefillPlan,
    )
    from ._prefix import (
        SlotCache as SlotCache,
    )
    from ._prefix import (
        choose_slot as choose_slot,
    )
    from ._prefix import (
        common_prefix as common_prefix,
    )
    from ._prefix import (
        reusable_prefix as reusable_prefix,
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
    from ._protocol import (
        EngineBase as EngineBase,
    )
    from ._protocol import (
        EngineProtocol as EngineProtocol,
    )
    from ._protocol import (
        OnChunk as OnChunk,
    )
    from ._protocol import (
        OnError as OnError,
    )
    from ._protocol import (
        SubmitFn as SubmitFn,
    )
    from ._protocol import (
        generate_via as generate_via,
    )
    from ._protocol import (
        stream_via as stream_via,
    )
    from ._sampling import (
        Sampler as Sampler,
    )
    from ._sampling import (
        SamplingParams as SamplingParams,
    )
    from ._sampling import (
        build_chain as build_chain,
    )
    from ._sampling import (
        build_sampler as build_sampler,
    )
    from ._speculative import (
        DraftLength as DraftLength,
    )
    from ._speculative import (
        NgramDrafter as NgramDrafter,
    )
    from ._speculative import (
        StepCost as StepCost,
    )
    from ._speculative import (
        first_cost as first_cost,
    )
    from ._speculative import (
        speculation_applies as speculation_applies,
    )
    from ._speculative import (
        vocab_mismatch as vocab_mismatch,
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
    from ._threads import (
        ThreadTuner as ThreadTuner,
    )
    from ._threads import (
        default_threads as default_threads,
    )
    from ._threads import (
        max_threads as max_threads,
    )
    from ._tokens import (
        TokensFromEngine as TokensFromEngine,
    )
    from ._toolprompt import (
        ToolFormat as ToolFormat,
    )
    from ._toolprompt import (
        ToolSupport as ToolSupport,
    )
    from ._types import (
        MAX_LOGPROBS as MAX_LOGPROBS,
    )
    from ._types import (
        Chunk as Chunk,
    )
    from ._types import (
        EngineConfig as EngineConfig,
    )
    from ._types import (
        GenerationHandle as GenerationHandle,
    )
    from ._types import (
        GenerationRequest as GenerationRequest,
    )
    from ._types import (
        LoadInfo as LoadInfo,
    )
    from ._types import (
        PrefillProgress as PrefillProgress,
    )
    from ._types import (
        RunRecord as RunRecord,
    )
    from ._types import (
        SpecSettings as SpecSettings,
    )
    from ._types import (
        TokenLogprob as TokenLogprob,
    )
    from ._values import (
        AUTO_ON_OFF as AUTO_ON_OFF,
    )
    from ._values import (
        GGML_TYPES as GGML_TYPES,
    )
    from ._values import (
        KV_TYPES as KV_TYPES,
    )
    from ._values import (
        MAX_CTX as MAX_CTX,
    )
    from ._values import (
        BackendSampling as BackendSampling,
    )
    from ._values import (
        EngineValues as EngineValues,
    )
    from ._values import (
        FlashAttn as FlashAttn,
    )
    from ._values import (
        KvType as KvType,
    )
    from ._values import (
        SamplingValues as SamplingValues,
    )

_EXPORTS = {
    "SeqCells": "_kvcache",
    "StatePersistence": "_kvcache",
    "keep_prefix": "_kvcache",
    "n_swa_of": "_kvcache",
    "persistence_for": "_kvcache",
    "Reuse": "_kvcache",
    "KvStateStore": "_kvstore",
    "KvStateError": "_kvstore",
    "SavedState": "_kvstore",
    "layout_fingerprint": "_kvstore",
    "choose_slot": "_prefix",
    "common_prefix": "_prefix",
    "reusable_prefix": "_prefix",
    "SlotCache": "_prefix",
    "BuildInfo": "_backend",
    "build_info": "_backend",
    "capture_llama_log": "_backend",
    "list_devices": "_backend",
    "StopMatcher": "_decoding",
    "LogprobTrail": "_decoding",
    "logprobs_at": "_decoding",
    "check_decode": "_decoding",
    "decode_error": "_decoding",
    "finish_run": "_decoding",
    "ThreadTuner": "_threads",
    "default_threads": "_threads",
    "max_threads": "_threads",
    "Engine": "_local",
    "FLASH_ATTN_AUTO": "_loadlog",
    "TokensFromEngine": "_tokens",
    "check_gguf_file": "_local",
    "flash_attn_for": "_loadlog",
    "flash_attn_type": "_loadlog",
    "rope_freq_scale": "_loadlog",
    "apply_rope": "_limits",
    "check_memory": "_limits",
    "rope_scaling_for": "_limits",
    "FLUSH_INTERVAL_S": "_process",
    "ProcessEngine": "_process",
    "last_words": "_process",
    "portable": "_process",
    "read_frame": "_process",
    "spawn_child": "_process",
    "write_frame": "_process",
    "PrefillPlan": "_prefill",
    "EngineBase": "_protocol",
    "EngineProtocol": "_protocol",
    "OnChunk": "_protocol",
    "OnError": "_protocol",
    "SubmitFn": "_protocol",
    "generate_via": "_protocol",
    "stream_via": "_protocol",
    "EMBED_POOLINGS": "_embed",
    "Embedder": "_embed",
    "Embeddings": "_embed",
    "EmbeddingsUnavailable": "_embed",
    "declared_pooling": "_embed",
    "json_object_grammar": "_grammar",
    "json_schema_grammar": "_grammar",
    "tool_call_grammar": "_grammar",
    "ToolFormat": "_toolprompt",
    "ToolSupport": "_toolprompt",
    "Sampler": "_sampling",
    "SamplingParams": "_sampling",
    "SamplingValues": "_values",
    "build_chain": "_sampling",
    "build_sampler": "_sampling",
    "CHATML": "_templates",
    "ChatTemplate": "_templates",
    "GEMMA": "_templates",
    "LLAMA3": "_templates",
    "MAX_RENDERED_CHARS": "_templates",
    "PHI3": "_templates",
    "AUTO_ON_OFF": "_values",
    "BackendSampling": "_values",
    "Chunk": "_types",
    "EngineConfig": "_types",
    "EngineValues": "_values",
    "FlashAttn": "_values",
    "GGML_TYPES": "_values",
    "GenerationHandle": "_types",
    "GenerationRequest": "_types",
    "KV_TYPES": "_values",
    "KvType": "_values",
    "MAX_CTX": "_values",
    "LoadInfo": "_types",
    "PrefillProgress": "_types",
    "RunRecord": "_types",
    "SpecSettings": "_types",
    "DraftLength": "_speculative",
    "NgramDrafter": "_speculative",
    "StepCost": "_speculative",
    "first_cost": "_speculative",
    "speculation_applies": "_speculative",
    "vocab_mismatch": "_speculative",
    "TokenLogprob": "_types",
    "MAX_LOGPROBS": "_types",
    "SPEC_MODES": "_types",
}
__all__ = sorted(_EXPORTS)
__getattr__ = lazy_exports(__name__, _EXPORTS)
