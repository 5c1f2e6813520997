"""Action distribution families, one module each, behind one protocol (see `registry`)."""
