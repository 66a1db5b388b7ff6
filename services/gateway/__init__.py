"""The public SwanSphere API (protos/swansphere/v1/swansphere.proto) in front of the stage pipeline."""
