"""SwanSphere's gRPC services (DESIGN §2): the gateway and one service per pipeline stage."""
