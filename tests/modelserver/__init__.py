"""The test hub itself (services/modelserver/): the model server, the hub and its CDN, huggingface_hub against it."""
