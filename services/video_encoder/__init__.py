"""Stage service: equirect frames -> SVAC video tokens (Triton model `video_encoder`)."""
