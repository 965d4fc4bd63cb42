"""Tiny random-weight transformers models of real architectures, saved to a folder.

No hub is reachable here, so tests build models from small configs and a BPE tokenizer trained in
memory, save them with `save_pretrained`, and load them back by path exactly as a user's
`hf:/path/to/model_folder` would. Replies are gibberish; the code path is the real one.
"""

from __future__ import annotations

from pathlib import Path

import torch

CORPUS = [
    "a photo of a cat sitting on a red sofa next to a window",
    "a dog runs across the green grass in the park at night",
    "Is there an oven in the kitchen? Answer yes or no.",
    "Describe the image in one sentence. The answer is a JSON object.",
    "two people ride bicycles along a wall under the blue sky",
] * 20

# A generic chat template: images become the model's image placeholder, text is appended as is.
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for part in message['content'] %}"
    "{% if part['type'] == 'image' %}IMAGE_PLACEHOLDER"
    "{% elif part['type'] == 'text' %}{{ part['text'] }}{% endif %}"
    "{% endfor %}{% endif %}<|im_end|>\n"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def chat_template(image_placeholder: str = "") -> str:
    return CHAT_TEMPLATE.replace("IMAGE_PLACEHOLDER", image_placeholder)


def build_tokenizer(special_tokens: list[str] = (), vocab_size: int = 400, image_placeholder: str = ""):
    """A byte-level BPE trained on a few sentences, wrapped as a fast tokenizer with a chat template."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    base = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=base + [t for t in special_tokens if t not in base],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(CORPUS, trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        additional_special_tokens=[t for t in special_tokens if t not in base],
    )
    fast.chat_template = chat_template(image_placeholder)
    return fast


# Default-size initialisation (0.02) makes tiny models repeat one token whatever the prompt, which
# would hide a batch that mixed up its rows; larger weights make replies depend on the input.
INIT_RANGE = 0.3


def _seeded(seed: int = 0):
    torch.manual_seed(seed)


def _never_ends(model, tokenizer) -> None:
    """Zero the output rows of special tokens: their logit is 0 while some random logit is always
    higher, so a reply runs to max_tokens unless a test adds an ordinary token as an end token."""
    with torch.no_grad():
        model.get_output_embeddings().weight[tokenizer.all_special_ids] = 0.0


def build_text_llm(folder: Path) -> Path:
    """Qwen2ForCausalLM, 2 layers, hidden 32."""
    from transformers import GenerationConfig, Qwen2Config, Qwen2ForCausalLM

    tokenizer = build_tokenizer()
    config = Qwen2Config(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=None,
        tie_word_embeddings=False,
        initializer_range=INIT_RANGE,
    )
    _seeded()
    model = Qwen2ForCausalLM(config).eval()
    _never_ends(model, tokenizer)
    model.generation_config = GenerationConfig(eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


IDEFICS3_TOKENS = ["<fake_token_around_image>", "<image>", "<end_of_utterance>", "<global-img>"] + [
    f"<row_{i}_col_{j}>" for i in range(1, 7) for j in range(1, 7)
]


def build_idefics3(folder: Path) -> Path:
    """Idefics3ForConditionalGeneration (the SmolVLM architecture): 32 px tiles of 4 image tokens."""
    from transformers import (
        GenerationConfig,
        Idefics3Config,
        Idefics3ForConditionalGeneration,
        Idefics3ImageProcessor,
        Idefics3Processor,
    )

    tokenizer = build_tokenizer(IDEFICS3_TOKENS, image_placeholder="<image>")
    image_processor = Idefics3ImageProcessor(
        size={"longest_edge": 64}, max_image_size={"longest_edge": 32}, do_image_splitting=True
    )
    processor = Idefics3Processor(image_processor, tokenizer, image_seq_len=4, chat_template=tokenizer.chat_template)
    config = Idefics3Config(
        vision_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2, image_size=32, patch_size=8),
        text_config=dict(
            model_type="llama",
            vocab_size=len(tokenizer),
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
            max_position_embeddings=1024,
            pad_token_id=tokenizer.pad_token_id,
            eos_token_id=tokenizer.eos_token_id,
            bos_token_id=None,
            initializer_range=INIT_RANGE,
        ),
        scale_factor=2,
        image_token_id=tokenizer.convert_tokens_to_ids("<image>"),
        pad_token_id=tokenizer.pad_token_id,
    )
    _seeded()
    model = Idefics3ForConditionalGeneration(config).eval()
    _never_ends(model, tokenizer)
    model.generation_config = GenerationConfig(eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder


QWEN2_VL_TOKENS = ["<|vision_start|>", "<|vision_end|>", "<|image_pad|>", "<|video_pad|>"]


def build_qwen2_vl(folder: Path) -> Path:
    """Qwen2VLForConditionalGeneration: 8 px patches merged 2x2, so a 32x32 px image is 4 tokens."""
    from transformers import (
        GenerationConfig,
        Qwen2VLConfig,
        Qwen2VLForConditionalGeneration,
        Qwen2VLImageProcessor,
        Qwen2VLProcessor,
        Qwen2VLVideoProcessor,
    )

    tokenizer = build_tokenizer(QWEN2_VL_TOKENS, image_placeholder="<|vision_start|><|image_pad|><|vision_end|>")
    image_processor = Qwen2VLImageProcessor(
        size={"shortest_edge": 32 * 32, "longest_edge": 64 * 64}, patch_size=8, merge_size=2, temporal_patch_size=2
    )
    video_processor = Qwen2VLVideoProcessor(patch_size=8, merge_size=2, temporal_patch_size=2)  # required, unused
    processor = Qwen2VLProcessor(image_processor, tokenizer, video_processor, chat_template=tokenizer.chat_template)
    ids = {name: tokenizer.convert_tokens_to_ids(tok) for name, tok in [
        ("image_token_id", "<|image_pad|>"), ("video_token_id", "<|video_pad|>"),
        ("vision_start_token_id", "<|vision_start|>"), ("vision_end_token_id", "<|vision_end|>"),
    ]}
    config = Qwen2VLConfig(
        vision_config=dict(depth=1, embed_dim=32, hidden_size=32, num_heads=2, mlp_ratio=2, patch_size=8, spatial_merge_size=2, temporal_patch_size=2),
        text_config=dict(
            vocab_size=len(tokenizer),
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
            max_position_embeddings=1024,
            rope_parameters={"rope_type": "default", "mrope_section": [2, 1, 1], "rope_theta": 10000.0},
            pad_token_id=tokenizer.pad_token_id,
            eos_token_id=tokenizer.eos_token_id,
            bos_token_id=None,
            initializer_range=INIT_RANGE,
        ),
        **ids,
    )
    _seeded()
    model = Qwen2VLForConditionalGeneration(config).eval()
    _never_ends(model, tokenizer)
    model.generation_config = GenerationConfig(eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder


def greedy_new_tokens(folder: Path, prompt: str, n: int) -> list[int]:
    """The first n token ids a text model writes for a user prompt, by plain transformers."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(folder)
    model = AutoModelForCausalLM.from_pretrained(folder).eval()
    inputs = tokenizer.apply_chat_template(
        [{"role": "user", "content": prompt}], add_generation_prompt=True, return_tensors="pt", return_dict=True
    )
    with torch.inference_mode():
        out = model.generate(**inputs, max_new_tokens=n, do_sample=False, eos_token_id=tokenizer.eos_token_id)
    return out[0, inputs["input_ids"].shape[1] :].tolist()


def with_end_tokens(source: Path, folder: Path, extra_eos: list[int]) -> Path:
    """A copy of a model folder whose generation_config lists more end-of-turn ids (as chat models do)."""
    import json
    import shutil

    shutil.copytree(source, folder)
    path = folder / "generation_config.json"
    config = json.loads(path.read_text())
    eos = config["eos_token_id"]
    config["eos_token_id"] = (eos if isinstance(eos, list) else [eos]) + list(extra_eos)
    path.write_text(json.dumps(config, indent=2))
    return folder
