"""Stage service: h_t and boundary context -> z_t by flow matching (Triton model `locdit`)."""
