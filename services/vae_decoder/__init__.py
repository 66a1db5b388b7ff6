"""Stage service: latents -> FOA chunks (Triton model `vae_decoder`)."""
