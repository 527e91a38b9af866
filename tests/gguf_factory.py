"""Tiny random-weight GGUF models for fast tests, written with the `gguf` package.

The vocabulary is SentencePiece-style (unk, bos, eos, 256 byte tokens, then pieces) and holds
``LONG_PIECE``: a 60-byte piece of multi-byte UTF-8, longer than the 32 bytes that
llama-cpp-python's own ``detokenize`` silently drops.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

LONG_PIECE = "\u2581" + "żółć-ünï" * 5  # ▁ + 5 x 8 chars, 13 bytes each = 68 bytes
WORDS = ["\u2581hello", "\u2581world", "\u2581the", "\u2581a", "\u2581cat", "\u2581dog", ".", ","]
N_VOCAB = 512


def vocab() -> tuple[list[str], list[int]]:
    tokens = ["<unk>", "<s>", "</s>"] + [f"<0x{i:02X}>" for i in range(256)]
    types = [2, 3, 3] + [6] * 256
    tokens += [*WORDS, LONG_PIECE]
    types += [1] * (len(WORDS) + 1)
    fill = N_VOCAB - len(tokens)
    tokens += [f"\u2581w{i}" for i in range(fill)]
    types += [1] * fill
    return tokens, types


def filler_vocab(n_vocab: int) -> tuple[list[str], list[int]]:
    """The GPU machine's synthetic vocabulary (/work/shared/device/synth_gguf.py): unk, bos,
    eos, 256 byte tokens, then filler pieces "▁t0", "▁t1", ... A random model over it picks a
    filler nearly every time, which a JSON grammar refuses outside strings."""
    tokens = ["<unk>", "<s>", "</s>"] + [f"<0x{i:02X}>" for i in range(256)]
    types = [2, 3, 3] + [6] * 256
    tokens += [f"\u2581t{i}" for i in range(n_vocab - len(tokens))]
    types += [1] * (n_vocab - len(types))
    return tokens, types


def fim_ids() -> tuple[int, int, int]:
    """The tokens a ``fim`` model names prefix, suffix and middle (three filler pieces)."""
    tokens = vocab()[0]
    return tokens.index("\u2581w0"), tokens.index("\u2581w1"), tokens.index("\u2581w2")


def long_piece_id() -> int:
    return vocab()[0].index(LONG_PIECE)


def write_tiny_llama(
    path: Path,
    n_embd: int = 64,
    n_layer: int = 2,
    n_head: int = 4,
    n_head_kv: int = 2,
    n_ff: int = 128,
    context_length: int = 2048,
    chat_template: str | None = None,
    seed: int = 0,
    name: str = "tiny-test-llama",
    split_max_tensors: int = 0,
    f16: bool = False,
    fim: bool = False,
    vocabulary: tuple[list[str], list[int]] | None = None,
) -> Path:
    """Write the model (its matrices F16 with ``f16``, for quantize tests; with ``fim``, the
    fill-in-the-middle tokens prefix/suffix/middle are :func:`fim_ids`); with
    ``split_max_tensors`` gguf writes ``<stem>-0000N-of-0000M.gguf``
    shards beside ``path`` instead (see :func:`shards`); ``vocabulary``: tokens and their types
    instead of :func:`vocab`'s (e.g. :func:`filler_vocab`)."""
    import gguf

    tokens, types = vocabulary or vocab()
    n_vocab = len(tokens)
    head_dim = n_embd // n_head
    rng = np.random.default_rng(seed)
    w = gguf.GGUFWriter(str(path), "llama", split_max_tensors=split_max_tensors)
    w.add_name(name)
    w.add_context_length(context_length)
    w.add_embedding_length(n_embd)
    w.add_block_count(n_layer)
    w.add_feed_forward_length(n_ff)
    w.add_head_count(n_head)
    w.add_head_count_kv(n_head_kv)
    w.add_rope_dimension_count(head_dim)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_file_type(gguf.LlamaFileType.MOSTLY_F16 if f16 else gguf.LlamaFileType.ALL_F32)
    w.add_tokenizer_model("llama")
    w.add_token_list(tokens)
    w.add_token_scores([-float(i) for i in range(n_vocab)])
    w.add_token_types(types)
    w.add_bos_token_id(1)
    w.add_eos_token_id(2)
    w.add_unk_token_id(0)
    if fim:
        for key, token in zip(("pre", "suf", "mid"), fim_ids(), strict=True):
            w.add_uint32(f"tokenizer.ggml.fim_{key}_token_id", token)
    if chat_template is not None:
        w.add_chat_template(chat_template)

    def rand(*shape: int) -> np.ndarray:
        return (rng.standard_normal(shape) * 0.5).astype(np.float16 if f16 else np.float32)

    ones = np.ones(n_embd, dtype=np.float32)
    w.add_tensor("token_embd.weight", rand(n_vocab, n_embd))
    w.add_tensor("output_norm.weight", ones)
    w.add_tensor("output.weight", rand(n_vocab, n_embd))
    for i in range(n_layer):
        p = f"blk.{i}."
        w.add_tensor(p + "attn_norm.weight", ones)
        w.add_tensor(p + "attn_q.weight", rand(n_head * head_dim, n_embd))
        w.add_tensor(p + "attn_k.weight", rand(n_head_kv * head_dim, n_embd))
        w.add_tensor(p + "attn_v.weight", rand(n_head_kv * head_dim, n_embd))
        w.add_tensor(p + "attn_output.weight", rand(n_embd, n_head * head_dim))
        w.add_tensor(p + "ffn_norm.weight", ones)
        w.add_tensor(p + "ffn_gate.weight", rand(n_ff, n_embd))
        w.add_tensor(p + "ffn_up.weight", rand(n_ff, n_embd))
        w.add_tensor(p + "ffn_down.weight", rand(n_embd, n_ff))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


def shards(path: Path) -> list[Path]:
    """The files a :func:`write_tiny_llama` call wrote: the shards when split, else ``[path]``."""
    split = sorted(path.parent.glob(f"{path.stem}-*-of-*.gguf"))
    return split or [path]


BERT_WORDS = ["hello", "world", "the", "cat", "dog", "sat", "on", "mat", "sky", "blue"]
"""Whole words of :func:`write_tiny_bert`'s vocabulary (each also splits into its letters)."""


def bert_vocab() -> list[str]:
    """A WordPiece vocabulary as llama.cpp's ``bert`` tokenizer reads it (convert_hf_to_gguf's
    spelling): specials in brackets, word starts with a leading ``▁``, ``##`` continuations
    without it. [PAD]=0, [UNK]=1, [CLS]=2, [SEP]=3, [MASK]=4."""
    tokens = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    letters = "abcdefghijklmnopqrstuvwxyz0123456789"
    tokens += ["\u2581" + p for p in ".,!?'-"]  # punctuation is a word of its own
    tokens += ["\u2581" + c for c in letters]  # a letter starting a word
    tokens += list(letters)  # "##x": a letter inside a word
    tokens += ["\u2581" + w for w in BERT_WORDS]
    return tokens


def write_tiny_bert(
    path: Path,
    n_embd: int = 32,
    n_layer: int = 2,
    n_head: int = 4,
    n_ff: int = 64,
    context_length: int = 64,
    pooling: int = 1,
    seed: int = 0,
    name: str = "tiny-test-bert",
) -> Path:
    """A BERT-style encoder (arch ``bert``: non-causal attention, absolute position embeddings,
    post-layer norms, WordPiece vocabulary) with random weights; ``pooling`` is written as
    ``bert.pooling_type`` (1 mean, 2 cls; 0 writes none), as a sentence-transformers
    conversion does."""
    import gguf

    tokens = bert_vocab()
    n_vocab = len(tokens)
    rng = np.random.default_rng(seed)
    w = gguf.GGUFWriter(str(path), "bert")
    w.add_name(name)
    w.add_context_length(context_length)
    w.add_embedding_length(n_embd)
    w.add_block_count(n_layer)
    w.add_feed_forward_length(n_ff)
    w.add_head_count(n_head)
    w.add_layer_norm_eps(1e-12)
    w.add_causal_attention(False)
    if pooling:
        w.add_pooling_type(gguf.PoolingType(pooling))
    w.add_file_type(gguf.LlamaFileType.ALL_F32)
    w.add_tokenizer_model("bert")
    w.add_token_list(tokens)
    w.add_token_types([3] * 5 + [1] * (n_vocab - 5))
    w.add_token_type_count(2)
    w.add_pad_token_id(0)
    w.add_unk_token_id(1)
    w.add_bos_token_id(2)
    w.add_sep_token_id(3)
    w.add_mask_token_id(4)
    w.add_add_bos_token(True)
    w.add_add_sep_token(True)

    def rand(*shape: int) -> np.ndarray:
        return (rng.standard_normal(shape) * 0.2).astype(np.float32)

    ones = np.ones(n_embd, dtype=np.float32)
    zeros = np.zeros(n_embd, dtype=np.float32)
    w.add_tensor("token_embd.weight", rand(n_vocab, n_embd))
    w.add_tensor("token_types.weight", rand(2, n_embd))
    w.add_tensor("position_embd.weight", rand(context_length, n_embd))
    w.add_tensor("token_embd_norm.weight", ones)
    w.add_tensor("token_embd_norm.bias", zeros)
    for i in range(n_layer):
        p = f"blk.{i}."
        for m in ("attn_q", "attn_k", "attn_v", "attn_output"):
            w.add_tensor(p + m + ".weight", rand(n_embd, n_embd))
            w.add_tensor(p + m + ".bias", rand(n_embd))
        w.add_tensor(p + "attn_output_norm.weight", ones)
        w.add_tensor(p + "attn_output_norm.bias", zeros)
        w.add_tensor(p + "ffn_up.weight", rand(n_ff, n_embd))
        w.add_tensor(p + "ffn_up.bias", rand(n_ff))
        w.add_tensor(p + "ffn_down.weight", rand(n_embd, n_ff))
        w.add_tensor(p + "ffn_down.bias", rand(n_embd))
        w.add_tensor(p + "layer_output_norm.weight", ones)
        w.add_tensor(p + "layer_output_norm.bias", zeros)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path
