"""A blocking client for a snow-fox node: its UNIX socket, its framing (a
4-byte big-endian length, then a protobuf Message) and the public API's
messages, generated from snow-fox's proto/public_api.proto when this
package is built.

    from snow_fox_client import Client
    with Client.connect("/run/snow-fox/snow-fox.sock") as node:
        print(node.node_info().node.name)
"""

import os
import socket
import struct
import time
import uuid

from . import public_api_pb2 as api

__all__ = ["Client", "NodeError", "api", "default_socket_path"]

Code = api.Message.Code


class NodeError(Exception):
    """The node answered with an Error: `kind` (an api.Error.Kind name) and
    `reason` (one sentence)."""

    def __init__(self, kind, reason, correlation_id):
        super().__init__(f"{reason} ({kind}, request {correlation_id})")
        self.kind = kind
        self.reason = reason
        self.correlation_id = correlation_id


def default_socket_path():
    """The socket the node uses by default, found by the node's own rule."""
    if os.geteuid() == 0:
        return "/run/snow-fox/snow-fox.sock"
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    if runtime:
        return os.path.join(runtime, "snow-fox.sock")
    return f"/tmp/snow-fox-{os.getuid()}/snow-fox.sock"


class Client:
    """One connection to a node. Every method sends one request and waits
    for its answer; `watch` and `logs` then yield what the node pushes."""

    def __init__(self, sock, max_frame=64 << 20):
        self._sock = sock
        self._buffer = b""
        self._counter = 0
        # Correlation ids must be unique among all requests in flight on
        # the node, not only on this connection.
        self._prefix = f"py-{uuid.uuid4().hex[:12]}"
        self._max_frame = max_frame

    @classmethod
    def connect(cls, path=None, timeout=30.0):
        """Connects to the node's socket (`path`, else the default one)."""
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(timeout)
        sock.connect(path or default_socket_path())
        return cls(sock)

    def close(self):
        self._sock.close()

    def __enter__(self):
        return self

    def __exit__(self, *_):
        self.close()

    def set_timeout(self, seconds):
        """How long a reply may take (None: wait for ever)."""
        self._sock.settimeout(seconds)

    # The requests.

    def node_info(self, details=False):
        """The node's name, version, configuration and health
        (api.NodeInfoResponse)."""
        reply = self._request(Code.NodeInfoRequest, node_info_request=api.NodeInfoRequest(details=details))
        return reply.node_info_response

    def status(self, service_id=None):
        """The state of every service's instances, or of one service
        (api.ServiceStatusResponse)."""
        request = api.ServiceStatusRequest()
        if service_id:
            request.service_id = service_id
        return self._request(Code.ServiceStatusRequest, service_status_request=request).service_status_response

    def start(self, service_id):
        """Starts a service; answered once it runs (and is ready)."""
        request = api.ServiceStart(service_id=service_id, version="")
        return self._request(Code.ServiceStart, service_start=request).service_status_response

    def stop(self, service_id):
        """Stops a service; answered once its processes have exited."""
        return self._request(Code.ServiceStop, service_stop=api.ServiceStop(service_id=service_id)).service_status_response

    def restart(self, service_id):
        """Restarts a service."""
        request = api.ServiceRestart(service_id=service_id)
        return self._request(Code.ServiceRestart, service_restart=request).service_status_response

    def watch(self):
        """Subscribes (answered once the node has taken the subscription),
        then returns an iterator of api.Event, one per instance state
        change, for ever."""
        self._request(Code.Subscribe)
        return self._events()

    def _events(self):
        while True:
            message = self._receive()
            if message.code == Code.Event:
                yield message.event

    def logs(self, service_ids=(), lines=0, follow=False, since_unix_us=None, instance=None, stream=None):
        """Sends the request at once, then returns an iterator of the
        captured lines (api.LogLines.Line) of `service_ids` (none: all), in
        the order they arrived: what is on disk (its last `lines` if not
        0), then, with `follow`, lines as they come."""
        request = api.LogsRequest(service_ids=list(service_ids), lines=lines, follow=follow)
        if since_unix_us is not None:
            request.since_unix_us = since_unix_us
        if instance is not None:
            request.instance = instance
        if stream is not None:
            request.stream = api.LogsRequest.Stream.Value(stream.upper())
        correlation_id = self._send(Code.LogsRequest, logs_request=request)
        return self._lines(correlation_id, follow)

    def _lines(self, correlation_id, follow):
        while True:
            message = self._raise_errors(self._receive(), correlation_id)
            if message.code == Code.LogLines:
                yield from message.log_lines.lines
            elif message.code == Code.Ack and not follow:
                return

    # The wire.

    def _send(self, code, **payload):
        self._counter += 1
        correlation_id = f"{self._prefix}:{self._counter}"
        message = api.Message(code=code, correlation_id=correlation_id, **payload)
        body = message.SerializeToString()
        self._sock.sendall(struct.pack(">I", len(body)) + body)
        return correlation_id

    def _request(self, code, **payload):
        correlation_id = self._send(code, **payload)
        while True:
            message = self._receive()
            if message.correlation_id == correlation_id or (
                not message.correlation_id and message.code == Code.Error
            ):
                return self._raise_errors(message, correlation_id)

    def _raise_errors(self, message, correlation_id):
        if message.code == Code.Error:
            raise NodeError(api.Error.Kind.Name(message.error.kind), message.error.reason, correlation_id)
        return message

    def _receive(self):
        while True:
            if len(self._buffer) >= 4:
                (length,) = struct.unpack(">I", self._buffer[:4])
                if length > self._max_frame:
                    raise ConnectionError(f"the node sent a frame of {length} bytes")
                if len(self._buffer) >= 4 + length:
                    body, self._buffer = self._buffer[4 : 4 + length], self._buffer[4 + length :]
                    message = api.Message()
                    message.ParseFromString(body)
                    return message
            chunk = self._sock.recv(1 << 16)
            if not chunk:
                raise ConnectionError("the node closed the connection")
            self._buffer += chunk


def now_unix_us():
    """Microseconds since the epoch, as LogsRequest.since_unix_us wants."""
    return time.time_ns() // 1000
