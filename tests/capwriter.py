"""Build pcap and pcapng captures in memory for the tests: every byte order, timestamp resolution and link
type the readers know, IPv4 options, IPv6 extension headers, TCP segments of any shape."""

import io
import socket
import struct

FIN, SYN, RST, PSH, ACK = 0x01, 0x02, 0x04, 0x08, 0x10

ETHERNET, NULL, RAW, RAW_12, RAW_14, LOOP, LINUX_SLL, LINUX_SLL2 = 1, 0, 101, 12, 14, 108, 113, 276


def _address(text):
    family = socket.AF_INET6 if ':' in text else socket.AF_INET
    return socket.inet_pton(family, text)


def tcp_segment(sport, dport, seq, ack=0, flags=ACK, payload=b'', options=b''):
    """A TCP header (with `options`, padded to 4 bytes) and payload; the checksum is left at 0."""
    options += b'\0' * (-len(options) % 4)
    offset = (20 + len(options)) // 4
    return struct.pack('!HHIIBBHHH', sport, dport, seq & 0xFFFFFFFF, ack & 0xFFFFFFFF, offset << 4, flags,
                       65535, 0, 0) + options + payload


def ipv4(src, dst, transport, protocol=6, options=b'', fragment=0, total_length=None):
    """An IPv4 packet; `fragment` is the flags and offset field (0x2000: more fragments)."""
    options += b'\0' * (-len(options) % 4)
    header_length = 20 + len(options)
    if total_length is None:
        total_length = header_length + len(transport)
    return struct.pack('!BBHHHBBH4s4s', 0x40 | header_length // 4, 0, total_length, 1, fragment, 64, protocol, 0,
                       _address(src), _address(dst)) + options + transport


def ipv6(src, dst, transport, protocol=6, extensions=(), payload_length=None):
    """An IPv6 packet with extension headers: `extensions` is a list of (header type, body) where the body
    is the header's bytes after its first two (next header, length), padded here to its unit."""
    chain = b''
    types = [kind for kind, _ in extensions] + [protocol]
    for (kind, body), next_header in zip(extensions, types[1:]):
        if kind == 44:                                 # fragment: 8 bytes, the length byte is reserved
            chain += struct.pack('!BB', next_header, 0) + body[:6].ljust(6, b'\0')
        elif kind == 51:                               # authentication header: units of 4 bytes, minus 2
            body += b'\0' * (-(len(body) + 2) % 4)
            chain += struct.pack('!BB', next_header, (len(body) + 2) // 4 - 2) + body
        else:                                          # units of 8 bytes, minus 1
            body += b'\0' * (-(len(body) + 2) % 8)
            chain += struct.pack('!BB', next_header, (len(body) + 2) // 8 - 1) + body
    payload = chain + transport
    if payload_length is None:
        payload_length = len(payload)
    return struct.pack('!IHBB16s16s', 6 << 28, payload_length, types[0], 64, _address(src), _address(dst)) + payload


def frame(linktype, packet, vlans=(), null_order='<'):
    """The link-layer frame of an IP packet; `vlans` lists (tag protocol, tag) pairs, outermost first."""
    version = packet[0] >> 4
    ethertype = 0x0800 if version == 4 else 0x86DD
    types = [tpid for tpid, _ in vlans] + [ethertype]        # the first in the header, each next after a tag
    tags = b''.join(struct.pack('!HH', tci, next_type) for (_, tci), next_type in zip(vlans, types[1:]))
    if linktype == ETHERNET:
        return b'\x02\0\0\0\0\x01' + b'\x02\0\0\0\0\x02' + struct.pack('!H', types[0]) + tags + packet
    if linktype == LINUX_SLL:
        return struct.pack('!HHH8sH', 0, 772, 6, b'\0' * 8, types[0]) + tags + packet
    if linktype == LINUX_SLL2:
        return struct.pack('!HHIHBB8s', types[0], 0, 1, 772, 0, 6, b'\0' * 8) + tags + packet
    if linktype in (RAW, RAW_12, RAW_14):
        return packet
    if linktype in (NULL, LOOP):
        family = 2 if version == 4 else 30
        return struct.pack(null_order + 'I', family) + packet
    raise ValueError('no frame for link type %d' % linktype)


def pcap(records, linktype=ETHERNET, order='<', nanoseconds=False, snaplen=262144, modified=False):
    """A classic pcap: `records` are (time in ns, frame) or (time in ns, frame, original length); `modified`:
    the variant of old Linux patches, with 8 more bytes in each record's header."""
    magic = 0xA1B2CD34 if modified else 0xA1B23C4D if nanoseconds else 0xA1B2C3D4
    out = [struct.pack(order + 'IHHiIII', magic, 2, 4, 0, 0, snaplen, linktype)]
    for record in records:
        time_ns, data = record[0], record[1]
        original = record[2] if len(record) > 2 else len(data)
        seconds, fraction = divmod(time_ns, 1000000000)
        if not nanoseconds:
            fraction //= 1000
        extra = struct.pack(order + 'iHBx', 2, 0x0800, 0) if modified else b''
        out.append(struct.pack(order + 'IIII', seconds, fraction, len(data), original) + extra + data)
    return b''.join(out)


def _padded(data):
    return data + b'\0' * (-len(data) % 4)


class Pcapng:
    """A pcapng built block by block: section(), interface(), then packets; bytes() at the end."""

    def __init__(self):
        self.blocks = []
        self.order = '<'
        self.interfaces = []

    def block(self, kind, body):
        body = _padded(body)
        length = 12 + len(body)
        self.blocks.append(struct.pack(self.order + 'II', kind, length) + body + struct.pack(self.order + 'I', length))

    def section(self, order='<', options=b''):
        self.order = order
        self.interfaces = []
        self.block(0x0A0D0D0A, struct.pack(order + 'IHHq', 0x1A2B3C4D, 1, 0, -1) + options)

    def option(self, code, value):
        return struct.pack(self.order + 'HH', code, len(value)) + _padded(value)

    def interface(self, linktype, tsresol=None, tsoffset=None, snaplen=0, comment=None):
        """Add an interface; tsresol is the if_tsresol byte (0x80 | n: 2^-n, else 10^-n)."""
        options = b''
        if comment is not None:
            options += self.option(1, comment)
        if tsresol is not None:
            options += self.option(9, bytes([tsresol]))
        if tsoffset is not None:
            options += self.option(14, struct.pack(self.order + 'q', tsoffset))
        if options:
            options += self.option(0, b'')
        self.block(1, struct.pack(self.order + 'HHI', linktype, 0, snaplen) + options)
        self.interfaces.append((tsresol, tsoffset or 0))
        return len(self.interfaces) - 1

    def _timestamp(self, interface, time_ns):
        tsresol, tsoffset = self.interfaces[interface]
        time_ns -= tsoffset * 1000000000
        if tsresol is None:
            tsresol = 6
        if tsresol & 0x80:
            return time_ns * (1 << (tsresol & 0x7F)) // 1000000000
        return time_ns * 10 ** tsresol // 1000000000

    def packet(self, interface, time_ns, data, original=None, options=b''):
        """An enhanced packet block."""
        timestamp = self._timestamp(interface, time_ns)
        original = len(data) if original is None else original
        self.block(6, struct.pack(self.order + 'IIIII', interface, timestamp >> 32, timestamp & 0xFFFFFFFF, len(data),
                                  original) + _padded(data) + options)

    def obsolete_packet(self, interface, time_ns, data, original=None):
        timestamp = self._timestamp(interface, time_ns)
        original = len(data) if original is None else original
        self.block(2, struct.pack(self.order + 'HHIIII', interface, 0, timestamp >> 32, timestamp & 0xFFFFFFFF,
                                  len(data), original) + data)

    def simple_packet(self, data, original=None):
        self.block(3, struct.pack(self.order + 'I', len(data) if original is None else original) + data)

    def bytes(self):
        return b''.join(self.blocks)


class ShortReads(io.RawIOBase):
    """A pipe-like stream over bytes: each read returns at most a few bytes, never seeks."""

    def __init__(self, data, sizes=(1, 7, 3, 64, 2, 1500, 5)):
        super().__init__()
        self.data = data
        self.position = 0
        self.sizes = sizes
        self.reads = 0

    def readable(self):
        return True

    def seekable(self):
        return False

    def read(self, size=-1):
        limit = self.sizes[self.reads % len(self.sizes)]
        self.reads += 1
        piece = self.data[self.position:self.position + min(limit, size if size >= 0 else limit)]
        self.position += len(piece)
        return piece

    def readinto(self, buffer):
        piece = self.read(len(buffer))
        buffer[:len(piece)] = piece
        return len(piece)


class Conversation:
    """TCP packets of one connection, with sequence numbers kept for each side: builds the segments of a
    scenario as IP packets."""

    def __init__(self, client=('192.0.2.1', 40000), server=('192.0.2.2', 5003), client_isn=1000, server_isn=5000):
        self.client, self.server = client, server
        self.seq = {'client': client_isn, 'server': server_isn}

    def packet(self, side, payload=b'', flags=ACK, seq=None, advance=True):
        """An IP packet from `side`; seq defaults to that side's next; `advance` moves it on."""
        source, target = (self.client, self.server) if side == 'client' else (self.server, self.client)
        other = 'server' if side == 'client' else 'client'
        if seq is None:
            seq = self.seq[side]
        if advance:
            self.seq[side] = seq + len(payload) + (1 if flags & (SYN | FIN) else 0)
        segment = tcp_segment(source[1], target[1], seq, self.seq[other], flags, payload)
        make = ipv6 if ':' in source[0] else ipv4
        return make(source[0], target[0], segment)
