"""Captures: read tcpdump and Wireshark files (pcap, pcapng) as a stream, and decode their packets to TCP.

I/O-free except CaptureReader, which only reads the stream it is given, in big pieces, never seeking:
a pipe will do, and a capture of any size is read in bounded memory.
"""

import collections
import socket
import struct

PCAP = 'pcap'
PCAPNG = 'pcapng'
MAGIC_SIZE = 4

# Classic pcap: magic number -> (byte order, units of the timestamp's second fraction in nanoseconds, size of
# a record's header: 24 in the 'modified' pcap of old Linux patches, which adds interface and packet type).
_PCAP_MAGICS = {
    b'\xd4\xc3\xb2\xa1': ('<', 1000, 16), b'\xa1\xb2\xc3\xd4': ('>', 1000, 16),
    b'\x4d\x3c\xb2\xa1': ('<', 1, 16), b'\xa1\xb2\x3c\x4d': ('>', 1, 16),
    b'\x34\xcd\xb2\xa1': ('<', 1000, 24), b'\xa1\xb2\xcd\x34': ('>', 1000, 24),
}
_PCAPNG_SHB = b'\x0a\x0d\x0d\x0a'          # a palindrome: the same in both byte orders
_BYTE_ORDER_MAGICS = {b'\x4d\x3c\x2b\x1a': '<', b'\x1a\x2b\x3c\x4d': '>'}

MAX_PACKET_SIZE = 64 << 20                 # a bigger record or block is garbage, not a packet
# Packet times the tools can show (datetime's years, with a day's margin for time zones): from the epoch to
# the end of 9998.  A classic pcap's 32-bit seconds always are; a pcapng's 64-bit timestamp, resolution and
# offset may put a packet before 1970 or after year 9999: garbage, not a time.
MAX_TIME_NS = 253370764800 * 1000000000

# pcapng block types
_SHB = 0x0A0D0D0A
_IDB = 1
_OPB = 2                                   # the obsolete packet block
_SPB = 3
_EPB = 6
_OPT_TSRESOL = 9
_OPT_TSOFFSET = 14

LINK_TYPES = {0: 'NULL', 1: 'ETHERNET', 12: 'RAW', 14: 'RAW', 101: 'RAW', 108: 'LOOP',
              113: 'LINUX_SLL', 276: 'LINUX_SLL2'}
# Names of some link types we do not read, for the error message.
_OTHER_LINK_TYPES = {6: 'IEEE802_5', 9: 'PPP', 10: 'FDDI', 50: 'PPP_HDLC', 51: 'PPP_ETHER', 104: 'C_HDLC',
                     105: 'IEEE802_11', 119: 'PRISM_HEADER', 127: 'IEEE802_11_RADIOTAP', 147: 'USER0',
                     187: 'BLUETOOTH_HCI_H4', 189: 'USB_LINUX', 192: 'PPI', 195: 'IEEE802_15_4',
                     220: 'USB_LINUX_MMAPPED',
                     228: 'IPV4', 229: 'IPV6', 239: 'NFLOG', 249: 'NETANALYZER_TRANSPARENT', 253: 'NETLINK'}

_new_tuple = tuple.__new__             # a namedtuple made without its __new__'s extra call, for the common path

FIN = 0x01
SYN = 0x02
RST = 0x04
ACK = 0x10


class CaptureError(Exception):
    """A file that is not a capture we can read: str() is one line naming the byte offset."""

    def __init__(self, message, offset):
        super().__init__('%s at byte %d' % (message, offset))
        self.offset = offset


class _Cut(Exception):
    """The stream ended in the middle of a record: raised inside the reader, never outside."""


def capture_format(first_bytes):
    """'pcap' or 'pcapng' from a file's first MAGIC_SIZE bytes; None when they are not a capture's."""
    magic = bytes(first_bytes[:MAGIC_SIZE])
    if magic in _PCAP_MAGICS:
        return PCAP
    if magic == _PCAPNG_SHB:
        return PCAPNG
    return None


class Packet(collections.namedtuple('Packet', 'offset linktype time_ns data orig_len')):
    """One captured packet: its record's byte offset in the file, link type, time in ns, captured bytes."""

    __slots__ = ()

    @property
    def time(self):
        """Seconds since the epoch, as a float."""
        return self.time_ns / 1e9


class CaptureReader:
    """Packets of a pcap or pcapng stream, read in big pieces, never seeking.

    `prefix` is what the caller already read from the stream (to tell the format).  After packets() is
    exhausted, `cut_at` is None or the byte offset of the record the stream ends in the middle of.
    """

    def __init__(self, stream, prefix=b'', chunk_size=1 << 20):
        self._read = getattr(stream, 'read1', None) or stream.read
        self._buffer = bytes(prefix)
        self._pos = 0                  # where the unread part of _buffer starts
        self._base = 0                 # the file offset of _buffer[0]
        self._chunk_size = chunk_size
        self._eof = False
        self.format = None
        self.cut_at = None
        self.before_read = None        # called before each read from the stream (which may wait for a pipe)

    # -- buffer --------------------------------------------------------------------------------------

    def _fill(self, size):
        """Make `size` unread bytes available; False if the stream ends first (with some bytes: _Cut)."""
        have = len(self._buffer) - self._pos
        if have >= size:
            return True
        pieces = [self._buffer[self._pos:]]
        while have < size:
            if not self._eof and self.before_read is not None:
                self.before_read()
            chunk = None if self._eof else self._read(max(self._chunk_size, size - have))
            if not chunk:
                self._eof = True
                if have:
                    raise _Cut()
                return False
            pieces.append(chunk)
            have += len(chunk)
        self._base += self._pos
        self._buffer = b''.join(pieces)
        self._pos = 0
        return True

    def _offset(self):
        return self._base + self._pos

    # -- packets -------------------------------------------------------------------------------------

    def packets(self):
        """Yield each Packet; raise CaptureError on garbage, after the packets before it."""
        try:
            if not self._fill(MAGIC_SIZE):
                raise CaptureError('not a capture: empty', 0)
            self.format = capture_format(self._buffer[self._pos:self._pos + MAGIC_SIZE])
            if self.format == PCAP:
                yield from self._pcap_packets()
            elif self.format == PCAPNG:
                yield from self._pcapng_packets()
            else:
                raise CaptureError('not a capture: unknown magic number', 0)
        except _Cut:
            self.cut_at = self._offset()

    def _pcap_packets(self):
        if not self._fill(24):
            raise CaptureError('not a capture: header too short', 0)
        buffer = self._buffer
        order, fraction_ns, header = _PCAP_MAGICS[buffer[self._pos:self._pos + 4]]
        linktype = struct.unpack_from(order + 'I', buffer, self._pos + 20)[0] & 0x0FFFFFFF
        self._pos += 24
        unpack_from = struct.Struct(order + 'IIII').unpack_from
        buffer, pos = self._buffer, self._pos
        while True:
            end = pos + header
            if end > len(buffer):
                self._pos = pos
                if not self._fill(header):
                    return
                buffer, pos = self._buffer, self._pos
                end = pos + header
            seconds, fraction, captured, original = unpack_from(buffer, pos)
            if captured > MAX_PACKET_SIZE:
                raise CaptureError('not a capture: bad packet length %d' % captured, self._base + pos)
            if end + captured > len(buffer):
                self._pos = pos
                self._fill(header + captured)
                buffer, pos = self._buffer, self._pos
                end = pos + header
            self._pos = end + captured
            yield _new_tuple(Packet, (self._base + pos, linktype, seconds * 1000000000 + fraction * fraction_ns,
                                      buffer[end:end + captured], original))
            pos = end + captured

    def _pcapng_packets(self):
        section = None
        while True:
            if not self._fill(12):
                return
            offset = self._offset()
            buffer = self._buffer
            pos = self._pos
            if buffer[pos:pos + 4] == _PCAPNG_SHB:
                section = self._section_header(offset)
                continue
            if section is None:                      # only when a caller's prefix lied: keep it an error
                raise CaptureError('not a capture: no section header', offset)
            block_type, length = section.header.unpack_from(buffer, pos)
            if length < 12 or length % 4 or length > MAX_PACKET_SIZE:
                raise CaptureError('not a capture: bad block length %d' % length, offset)
            self._fill(length)
            buffer = self._buffer
            pos = self._pos
            if section.length.unpack_from(buffer, pos + length - 4)[0] != length:
                raise CaptureError('not a capture: block lengths differ', offset)
            self._pos = pos + length
            if block_type == _EPB:
                yield section.enhanced_packet(buffer, pos, length, offset)
            elif block_type == _SPB:
                yield section.simple_packet(buffer, pos, length, offset)
            elif block_type == _OPB:
                yield section.obsolete_packet(buffer, pos, length, offset)
            elif block_type == _IDB:
                section.add_interface(buffer, pos, length, offset)

    def _section_header(self, offset):
        """Read a section header block: a new byte order and no interfaces yet."""
        if not self._fill(12):
            raise _Cut()
        pos = self._pos
        order = _BYTE_ORDER_MAGICS.get(self._buffer[pos + 8:pos + 12])
        if order is None:
            raise CaptureError('not a capture: bad byte-order magic', offset + 8)
        length = struct.unpack_from(order + 'I', self._buffer, pos + 4)[0]
        if length < 28 or length % 4 or length > MAX_PACKET_SIZE:
            raise CaptureError('not a capture: bad block length %d' % length, offset)
        self._fill(length)
        if struct.unpack_from(order + 'I', self._buffer, self._pos + length - 4)[0] != length:
            raise CaptureError('not a capture: block lengths differ', offset)
        self._pos += length
        return _Section(order)


class _Interface:
    """A pcapng interface: link type, snap length and how to turn its timestamps into nanoseconds."""

    def __init__(self, linktype, snaplen, resolution_exponent=6, power_of_two=False, offset_seconds=0):
        self.linktype = linktype
        self.snaplen = snaplen
        self.offset_ns = offset_seconds * 1000000000
        self.multiplier = 1
        self.divisor = 1
        if power_of_two:
            self.multiplier = 1000000000
            self.divisor = 1 << resolution_exponent
        elif resolution_exponent <= 9:
            self.multiplier = 10 ** (9 - resolution_exponent)
        else:
            self.divisor = 10 ** (resolution_exponent - 9)

    def time_ns(self, timestamp):
        if self.divisor == 1:
            return timestamp * self.multiplier + self.offset_ns
        return timestamp * self.multiplier // self.divisor + self.offset_ns


class _Section:
    """One pcapng section's byte order and interfaces."""

    def __init__(self, order):
        self.order = order
        self.header = struct.Struct(order + 'II')
        self.length = struct.Struct(order + 'I')
        self.epb = struct.Struct(order + 'IIIII')
        self.opb = struct.Struct(order + 'HHIIII')
        self.option = struct.Struct(order + 'HH')
        self.interfaces = []
        self.last_time_ns = 0          # a simple packet block has no time: it takes the one before

    def add_interface(self, buffer, pos, length, offset):
        if length < 20:
            raise CaptureError('not a capture: interface block too short', offset)
        linktype, _, snaplen = struct.unpack_from(self.order + 'HHI', buffer, pos + 8)
        exponent, power_of_two, offset_seconds = 6, False, 0
        for code, value in self._options(buffer, pos + 16, pos + length - 4):
            if code == _OPT_TSRESOL and len(value) >= 1:
                exponent, power_of_two = value[0] & 0x7F, bool(value[0] & 0x80)
            elif code == _OPT_TSOFFSET and len(value) >= 8:
                offset_seconds = struct.unpack_from(self.order + 'q', value)[0]
        self.interfaces.append(_Interface(linktype, snaplen, exponent, power_of_two, offset_seconds))

    def _options(self, buffer, pos, end):
        """Yield (code, value) of the options between pos and end; stop at the end-of-options or garbage."""
        while pos + 4 <= end:
            code, size = self.option.unpack_from(buffer, pos)
            if code == 0 or pos + 4 + size > end:
                return
            yield code, buffer[pos + 4:pos + 4 + size]
            pos += 4 + ((size + 3) & ~3)

    def _interface(self, number, offset):
        if number >= len(self.interfaces):
            raise CaptureError('not a capture: packet of undefined interface %d' % number, offset)
        return self.interfaces[number]

    def enhanced_packet(self, buffer, pos, length, offset):
        number, high, low, captured, original = self.epb.unpack_from(buffer, pos + 8)
        return self._timed_packet(number, high << 32 | low, captured, original, buffer, pos, length, offset)

    def _timed_packet(self, number, timestamp, captured, original, buffer, pos, length, offset):
        interface = self._interface(number, offset)
        if 28 + captured + 4 > length:
            raise CaptureError('not a capture: bad packet length %d' % captured, offset)
        self.last_time_ns = time_ns = interface.time_ns(timestamp)
        if not 0 <= time_ns < MAX_TIME_NS:
            raise CaptureError('not a capture: packet time out of range (%d ns since 1970)' % time_ns, offset)
        return Packet(offset, interface.linktype, time_ns, buffer[pos + 28:pos + 28 + captured], original)

    def simple_packet(self, buffer, pos, length, offset):
        interface = self._interface(0, offset)
        original = self.length.unpack_from(buffer, pos + 8)[0]
        captured = min(original, length - 16)
        if interface.snaplen:
            captured = min(captured, interface.snaplen)
        return Packet(offset, interface.linktype, self.last_time_ns, buffer[pos + 12:pos + 12 + captured], original)

    def obsolete_packet(self, buffer, pos, length, offset):
        number, _, high, low, captured, original = self.opb.unpack_from(buffer, pos + 8)
        return self._timed_packet(number, high << 32 | low, captured, original, buffer, pos, length, offset)


# -- decoding ------------------------------------------------------------------------------------------

class Segment(collections.namedtuple('Segment', 'src sport dst dport seq ack flags payload cut')):
    """A TCP segment: raw addresses (4 or 16 bytes), ports, sequence and ack numbers, flags, payload bytes,
    and `cut`: how many payload bytes the capture did not hold (snap length)."""

    __slots__ = ()


IP_FRAGMENT = 'IP fragment'
TCP_HEADER_CUT = 'TCP header cut'       # the capture's snap length cut a packet before its TCP flags

_IP_VERSIONS = {0x0800: 4, 0x86DD: 6}     # by ethertype
# Link types that give an ethertype: where it is, and where what it names starts (Ethernet, Linux cooked v1, v2)
_ETHERTYPE_AT = {1: (12, 14), 113: (14, 16), 276: (0, 20)}
_VLAN_TAGS = (0x8100, 0x88A8, 0x9100)
_NULL_IPV6 = (24, 28, 30)
_IPV6_EXTENSIONS = (0, 43, 60)             # hop-by-hop, routing, destination options: (length + 1) * 8
_IPV6_FRAGMENT = 44
_IPV6_AH = 51
_TCP = 6
# An IPv4 packet this short may be followed by Ethernet padding (a frame's 46 bytes at least: linux cooked
# captures of incoming frames keep it too).  A packet of segmentation offload is never this short.
_PADDED_IP_SIZE = 46

_U16 = struct.Struct('!H')
# The common case in one unpack: an ethertype, an IPv4 header of 20 bytes, and the first 14 bytes of TCP.
_IPV4_TCP = 'BxH2xHxB2x4s4sHHIIBB'         # version+ihl, total length, fragment, protocol, addresses, TCP's
_FAST_LINKS = {linktype: (struct.Struct('!%dxH%dx' % (at, start - at - 2) + _IPV4_TCP), start)
               for linktype, (at, start) in {1: (12, 14), 113: (14, 16), 276: (0, 20)}.items()}
_IPV4 = struct.Struct('!BxHxxHxB')         # version+ihl, total length, flags+fragment offset, protocol
_IPV6 = struct.Struct('!4xHB')             # payload length, next header
_TCP_HEADER = struct.Struct('!HHIIBB')     # ports, seq, ack, data offset, flags


def address_text(raw):
    """'192.0.2.1' or '2001:db8::1' from 4 or 16 raw bytes."""
    return socket.inet_ntop(socket.AF_INET if len(raw) == 4 else socket.AF_INET6, raw)


def link_type_name(linktype):
    name = LINK_TYPES.get(linktype) or _OTHER_LINK_TYPES.get(linktype)
    return '%d (%s)' % (linktype, name) if name else '%d' % linktype


class PacketDecoder:
    """Packets to TCP segments: link layer, IPv4 or IPv6, TCP.  Counts what it skips."""

    def __init__(self):
        self.skipped = 0               # not TCP over IP, or too short to read
        self.fragments = 0             # IP fragments of TCP, not reassembled
        self.headers_cut = 0           # TCP packets the snap length cut before their flags, skipped

    def decode(self, packet):
        """A Segment, None (skipped), IP_FRAGMENT or TCP_HEADER_CUT; CaptureError for a link type we do not
        read."""
        data = packet.data
        linktype = packet.linktype
        fast = _FAST_LINKS.get(linktype)
        if fast is not None and len(data) >= fast[0].size:        # IPv4 and TCP without options: one unpack
            (ethertype, first, total, fragment, protocol, src, dst, sport, dport, seq, ack, offset,
             flags) = fast[0].unpack_from(data)
            if (ethertype == 0x0800 and first == 0x45 and protocol == _TCP and not fragment & 0x3FFF and total
                    and offset >= 0x50):
                start = fast[1]
                end = start + total
                payload_start = start + 20 + (offset >> 4) * 4
                captured_end = len(data)
                if end < captured_end:
                    captured_end = end
                if payload_start <= captured_end:
                    return _new_tuple(Segment, (src, sport, dst, dport, seq, ack, flags,
                                                data[payload_start:captured_end], end - captured_end))
        try:
            if linktype in _ETHERTYPE_AT:
                at, start = _ETHERTYPE_AT[linktype]
                ethertype = _U16.unpack_from(data, at)[0]
                while ethertype in _VLAN_TAGS:             # a tag's 4 bytes start where the packet would
                    ethertype = _U16.unpack_from(data, start + 2)[0]
                    start += 4
                version = _IP_VERSIONS.get(ethertype)
            elif linktype in (101, 12, 14):
                version, start = data[0] >> 4, 0
            elif linktype in (0, 108):
                version, start = _null_version(data), 4
            else:
                raise CaptureError('unsupported link type %s' % link_type_name(linktype), packet.offset)
            if version == 4:
                segment = self._ipv4(data, start, packet.orig_len)
            elif version == 6:
                segment = self._ipv6(data, start, packet.orig_len)
            else:
                segment = None
        except (struct.error, IndexError):
            segment = None
        if segment is None:
            self.skipped += 1
        return segment

    def _ipv4(self, data, start, original):
        first, total, fragment, protocol = _IPV4.unpack_from(data, start)
        if first >> 4 != 4 or protocol != _TCP or first & 15 < 5:
            return None
        if fragment & 0x3FFF:
            self.fragments += 1
            return IP_FRAGMENT
        header = (first & 15) * 4
        if total == 0:          # segmentation offload: the frame holds the whole packet (as Wireshark takes it)
            end = max(original, len(data))
            if end - start <= _PADDED_IP_SIZE:
                end = None      # too short to be offloaded: what follows the TCP header may be padding, not bytes
        elif total < header:
            return None                                            # a length that lies: not a packet to read
        else:
            end = start + total
        return self._tcp(data, start + header, end, original, data[start + 12:start + 16],
                         data[start + 16:start + 20])

    def _ipv6(self, data, start, original):
        length, next_header = _IPV6.unpack_from(data, start)
        end = start + 40 + length if length else max(original, len(data))     # 0: a jumbogram or offload
        pos = start + 40
        while next_header != _TCP:
            if next_header in _IPV6_EXTENSIONS:
                next_header, pos = data[pos], pos + (data[pos + 1] + 1) * 8
            elif next_header == _IPV6_FRAGMENT:
                if _U16.unpack_from(data, pos + 2)[0] & 0xFFF9:     # an offset or more fragments
                    if data[pos] == _TCP:
                        self.fragments += 1
                        return IP_FRAGMENT
                    return None
                next_header, pos = data[pos], pos + 8
            elif next_header == _IPV6_AH:
                next_header, pos = data[pos], pos + (data[pos + 1] + 2) * 4
            else:
                return None
        return self._tcp(data, pos, end, original, data[start + 8:start + 24], data[start + 24:start + 40])

    def _tcp(self, data, start, end, original, src, dst):
        """The segment at `start`, its packet ending at `end` (None: at the end of its TCP header) of the frame
        (the capture may hold less of it: `original` is the frame's length)."""
        if start + _TCP_HEADER.size > len(data):
            if original > len(data) and (end is None or end > len(data)):    # the snap length cut it: flags unknown
                self.headers_cut += 1
                return TCP_HEADER_CUT
            return None                                            # shorter than a TCP header: not a packet
        sport, dport, seq, ack, offset, flags = _TCP_HEADER.unpack_from(data, start)
        if offset < 0x50:
            return None                                            # a header shorter than TCP's: not a packet
        payload_start = start + (offset >> 4) * 4
        if end is None:
            end = payload_start
        captured_end = len(data)
        if end < captured_end:
            captured_end = end
        if payload_start > captured_end:
            if payload_start > end:
                raise IndexError('TCP header past the packet')
            # The capture cut the packet in its TCP options (snap length): none of its bytes are here, all missing.
            return _new_tuple(Segment, (src, sport, dst, dport, seq, ack, flags, b'', end - payload_start))
        return _new_tuple(Segment, (src, sport, dst, dport, seq, ack, flags, data[payload_start:captured_end],
                                    end - captured_end))


def _null_version(data):
    """BSD loopback: the address family in the capturing machine's byte order, either one."""
    if len(data) < 4:
        raise IndexError('short')
    family = data[0] | data[3]         # one of them is 0 in either byte order (families are < 256)
    if family == 2:
        return 4
    if family in _NULL_IPV6:
        return 6
    return None
