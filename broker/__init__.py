"""The ZeroMQ broker: the wire protocol (frames), the routing table and its loop."""
