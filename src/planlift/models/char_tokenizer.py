"""A character-level tokenizer (printable ASCII + newline) as a Hugging Face fast tokenizer.

Built with `tokenizers` (WordLevel over single characters), wrapped in `PreTrainedTokenizerFast`, so
`save_pretrained` / `AutoTokenizer.from_pretrained` round-trip it like any hub tokenizer.
"""

from __future__ import annotations

from tokenizers import Tokenizer, decoders, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast

PAD, BOS, EOS, UNK = "<pad>", "<bos>", "<eos>", "<unk>"
SPECIAL_TOKENS = (PAD, BOS, EOS, UNK)
CHARACTERS = (*(chr(code) for code in range(32, 127)), "\n")


def build_char_tokenizer(padding_side: str = "left") -> PreTrainedTokenizerFast:
    vocab = {token: index for index, token in enumerate((*SPECIAL_TOKENS, *CHARACTERS))}
    backend = Tokenizer(models.WordLevel(vocab=vocab, unk_token=UNK))
    backend.pre_tokenizer = pre_tokenizers.Split(pattern="", behavior="isolated")
    backend.decoder = decoders.Fuse()
    return PreTrainedTokenizerFast(
        tokenizer_object=backend,
        pad_token=PAD,
        bos_token=BOS,
        eos_token=EOS,
        unk_token=UNK,
        padding_side=padding_side,
        model_max_length=4096,
    )
