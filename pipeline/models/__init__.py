"""Model calls: requests and replies, the call cache, backends (OpenAI-compatible, transformers, caption mode), CLIP and text encoders, prompt sets, JSON replies. Imports the basics only."""
