"""GGUF metadata through GGUFReader: generated models, split shards, the starter models."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from llcuda_tui.core.gguf import quant_from_filename, read_summary, split_info
from tests.core.hubserver import write_gguf
from tests.gguf_factory import N_VOCAB


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_gguf(tmp_path_factory.mktemp("meta") / "tiny.gguf", chat_template="{{ x }}")[0]


def expected_params(n_embd: int = 64, n_layer: int = 2, n_ff: int = 128) -> int:
    kv = 2 * (n_embd // 4)
    per_layer = n_embd * 2 + n_embd * n_embd * 2 + 2 * kv * n_embd + 3 * n_ff * n_embd
    return 2 * N_VOCAB * n_embd + n_embd + n_layer * per_layer


def test_summary_of_a_generated_model(tiny: Path) -> None:
    s = read_summary([tiny])
    assert (s.arch, s.quant, s.context_length) == ("llama", "F32", 2048)
    assert (s.n_layer, s.n_embd, s.n_ff, s.n_head, s.n_head_kv) == (2, 64, 128, 4, 2)
    assert (s.head_dim_k, s.head_dim_v, s.n_vocab) == (16, 16, N_VOCAB)
    assert s.has_chat_template and s.split_count == 1 and not s.swa_layers
    assert s.parameter_count == expected_params()
    assert s.tensor_bytes == 4 * s.parameter_count  # F32
    assert s.embd_bytes == s.output_bytes == 4 * N_VOCAB * 64 and not s.output_tied
    assert sum(s.layer_bytes) + s.embd_bytes + s.output_bytes + s.other_bytes == s.tensor_bytes


def test_summary_matches_the_plain_reader(tiny: Path) -> None:
    from gguf import GGUFReader

    plain = GGUFReader(tiny)
    s = read_summary([tiny])
    assert s.parameter_count == sum(int(t.n_elements) for t in plain.tensors)
    assert s.context_length == plain.fields["llama.context_length"].contents()
    assert s.n_vocab == len(plain.fields["tokenizer.ggml.tokens"].contents())


def test_split_shards_sum_up(tmp_path: Path) -> None:
    shards = write_gguf(tmp_path / "m.gguf", split_max_tensors=6)
    assert len(shards) > 1
    s = read_summary(shards)
    assert s.split_count == len(shards)
    assert s.parameter_count == expected_params() and s.n_layer == 2


def test_summary_round_trips_through_json(tiny: Path) -> None:
    from llcuda_tui.core.gguf import GgufSummary

    s = read_summary([tiny])
    assert GgufSummary.from_dict(s.to_dict()) == s


@pytest.mark.parametrize(
    "name, quant",
    [
        ("Llama-3.2-1B-Instruct-Q4_K_M.gguf", "Q4_K_M"),
        ("SmolLM2-135M-Instruct.Q4_1.gguf", "Q4_1"),
        ("gemma-3-270m-q4_k_m.gguf", "Q4_K_M"),
        ("model-UD-Q4_K_XL-00001-of-00003.gguf", "Q4_K_XL"),
        ("phi-3-mini.IQ3_XXS.gguf", "IQ3_XXS"),
        ("qwen2.5-7b-instruct-bf16.gguf", "BF16"),
        ("mmproj-model-f16.gguf", "F16"),
        ("plain.gguf", None),
    ],
)
def test_quant_from_filename(name: str, quant: str | None) -> None:
    assert quant_from_filename(name) == quant


def test_split_info() -> None:
    assert split_info("dir/m-Q4_K_M-00002-of-00005.gguf") == ("m-Q4_K_M", 2, 5)
    assert split_info("m-Q4_K_M.gguf") is None


def test_starter_models(gemma_path: Path, smollm_path: Path) -> None:
    started = time.monotonic()
    g = read_summary([gemma_path])
    assert time.monotonic() - started < 5  # plain GGUFReader takes ~20 s on its 262k vocabulary
    assert (g.arch, g.quant, g.n_vocab) == ("gemma3", "Q4_K_M", 262144)
    assert (g.n_layer, g.n_head_kv) == (18, 1)
    assert g.swa_layers == tuple(i for i in range(18) if i % 6 != 5)
    assert g.output_tied and not g.has_chat_template
    s = read_summary([smollm_path])
    assert (s.arch, s.quant, s.n_vocab, s.context_length) == ("llama", "Q4_1", 49152, 8192)
    assert s.has_chat_template and 130e6 < s.parameter_count < 140e6


def test_a_gguf_release_without_the_readers_internals_reads_the_plain_way(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The sped-up reader overrides GGUFReader internals; where a gguf release lacks one, the
    plain GGUFReader is used instead of a reader that would fail on every file."""
    import gguf

    from llcuda_tui.core import gguf as meta

    assert meta._make_reader_class() is not gguf.GGUFReader
    monkeypatch.delattr(gguf.GGUFReader, "_get_field_parts")
    assert meta._make_reader_class() is gguf.GGUFReader
