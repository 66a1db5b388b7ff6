"""Stage service: video tokens, history and text -> h_t per patch (Triton model `spatial_lm`)."""
