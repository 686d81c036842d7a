"""Writes a tiny llama-architecture chat model as GGUF, for the real-engine suite: 2 layers,
64-wide, a small vocabulary (letters, digits, punctuation and byte fallback), a chat template,
and seeded random weights, so that llama-server runs it in milliseconds and its answers at
temperature 0 are the same every time. It knows nothing; it only has to be a real model.

    python make_model.py OUT.gguf                 # the test model
    python make_model.py OUT.gguf 384 6 1024 8192 # wider, deeper, longer context (the
                                                  # prefix benchmark: prompts that take time)
"""

import string
import sys

import numpy as np
from gguf import GGUFWriter, TokenType

N_EMBD, N_HEAD, N_FF, N_LAYER, N_CTX = 64, 4, 128, 2, 512
if len(sys.argv) == 6:
    N_EMBD, N_LAYER, N_FF, N_CTX = (int(a) for a in sys.argv[2:])

TEMPLATE = (
    "{% for message in messages %}{{ message['role'] }}: {{ message['content'] }}\n{% endfor %}"
    "{% if add_generation_prompt %}assistant:{% endif %}"
)


def vocabulary():
    tokens = [("<unk>", TokenType.UNKNOWN), ("<s>", TokenType.CONTROL), ("</s>", TokenType.CONTROL)]
    tokens += [(f"<0x{b:02X}>", TokenType.BYTE) for b in range(256)]
    pieces = ["\u2581"] + list(string.ascii_letters + string.digits + ".,!?'-:")
    pieces += ["\u2581" + w for w in "the a of to and is it you that in hello there bridge".split()]
    tokens += [(p, TokenType.NORMAL) for p in pieces]
    return tokens


def main(path):
    rng = np.random.default_rng(7)
    tokens = vocabulary()
    n_vocab = len(tokens)
    w = GGUFWriter(path, "llama")
    w.add_name("bridge-tiny")
    w.add_context_length(N_CTX)
    w.add_embedding_length(N_EMBD)
    w.add_block_count(N_LAYER)
    w.add_feed_forward_length(N_FF)
    w.add_head_count(N_HEAD)
    w.add_head_count_kv(N_HEAD)
    w.add_rope_dimension_count(N_EMBD // N_HEAD)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_file_type(0)
    w.add_tokenizer_model("llama")
    w.add_token_list([t for t, _ in tokens])
    w.add_token_types([int(k) for _, k in tokens])
    # Longer pieces merge first.
    w.add_token_scores([float(len(t)) if k == TokenType.NORMAL else 0.0 for t, k in tokens])
    w.add_bos_token_id(1)
    w.add_eos_token_id(2)
    w.add_unk_token_id(0)
    w.add_add_bos_token(True)
    w.add_chat_template(TEMPLATE)

    def weights(*shape):
        return (rng.standard_normal(shape) * 0.2).astype(np.float32)

    w.add_tensor("token_embd.weight", weights(n_vocab, N_EMBD))
    w.add_tensor("output_norm.weight", np.ones(N_EMBD, dtype=np.float32))
    output = weights(n_vocab, N_EMBD)
    # Only whole text pieces are ever chosen (never a byte or control token), so every answer
    # is valid UTF-8 and never ends early.
    for i, (_, kind) in enumerate(tokens):
        if kind != TokenType.NORMAL:
            output[i] = 0.0
    output[[i for i, (_, k) in enumerate(tokens) if k == TokenType.NORMAL]] += 0.5 * np.sign(
        rng.standard_normal(N_EMBD)
    ).astype(np.float32)
    w.add_tensor("output.weight", output)
    for b in range(N_LAYER):
        w.add_tensor(f"blk.{b}.attn_norm.weight", np.ones(N_EMBD, dtype=np.float32))
        for name in ("attn_q", "attn_k", "attn_v", "attn_output"):
            w.add_tensor(f"blk.{b}.{name}.weight", weights(N_EMBD, N_EMBD))
        w.add_tensor(f"blk.{b}.ffn_norm.weight", np.ones(N_EMBD, dtype=np.float32))
        w.add_tensor(f"blk.{b}.ffn_gate.weight", weights(N_FF, N_EMBD))
        w.add_tensor(f"blk.{b}.ffn_up.weight", weights(N_FF, N_EMBD))
        w.add_tensor(f"blk.{b}.ffn_down.weight", weights(N_EMBD, N_FF))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


if __name__ == "__main__":
    main(sys.argv[1])
