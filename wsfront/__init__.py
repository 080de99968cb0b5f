"""The WebSocket front: sessions (sans-I/O), the server shell and the broker link."""
