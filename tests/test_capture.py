"""Unit tests for capture reading: pcap and pcapng streams, link layers, IPv4 and IPv6, TCP decoding."""

import io
import os
import shutil
import subprocess
import tempfile
import threading
import unittest

from tests import capwriter
from tests.harness import seeded_rng
from tests.capwriter import ACK, Pcapng, ShortReads, frame, ipv4, ipv6, pcap, tcp_segment
from ctiproxy.capture import (IP_FRAGMENT, PCAP, PCAPNG, CaptureError, CaptureReader, PacketDecoder,
                              address_text, capture_format)
from ctiproxy.reassembly import Reassembler

T0 = 1795000000 * 1000000000          # a time in 2026, in nanoseconds


def read_all(data, prefix_size=0, stream=None):
    """(packets, reader) of a capture given as bytes, read through short reads, the first bytes as prefix."""
    stream = stream or ShortReads(data[prefix_size:])
    reader = CaptureReader(stream, prefix=data[:prefix_size], chunk_size=4096)
    return list(reader.packets()), reader


def one_tcp_packet(payload=b'hello', sport=40000, dport=5003):
    return ipv4('192.0.2.1', '192.0.2.2', tcp_segment(sport, dport, 1000, 2000, ACK, payload))


class FormatTest(unittest.TestCase):

    def test_magic_numbers(self):
        for magic, expected in [(b'\xd4\xc3\xb2\xa1', PCAP), (b'\xa1\xb2\xc3\xd4', PCAP), (b'\x4d\x3c\xb2\xa1', PCAP),
                                (b'\xa1\xb2\x3c\x4d', PCAP), (b'\x34\xcd\xb2\xa1', PCAP), (b'\xa1\xb2\xcd\x34', PCAP),
                                (b'\x0a\x0d\x0d\x0a', PCAPNG), (b'{"ti', None),
                                (b'\xd4\xc3', None), (b'', None)]:
            with self.subTest(magic=magic):
                self.assertEqual(capture_format(magic + b'rest'), expected)
                self.assertEqual(capture_format(magic[:3]), None)     # too short to tell


class PcapTest(unittest.TestCase):

    def test_both_byte_orders_and_resolutions(self):
        records = [(T0 + 123456789, b'first'), (T0 + 2000000000, b'second packet', 1500), (T0 + 1, b'')]
        for order in '<>':
            for nanoseconds in (False, True):
                with self.subTest(order=order, nanoseconds=nanoseconds):
                    data = pcap(records, linktype=capwriter.RAW, order=order, nanoseconds=nanoseconds)
                    for prefix_size in (0, 4, 30):
                        packets, reader = read_all(data, prefix_size)
                        self.assertEqual(reader.format, PCAP)
                        self.assertIsNone(reader.cut_at)
                        self.assertEqual([p.data for p in packets], [b'first', b'second packet', b''])
                        expected = [t if nanoseconds else t // 1000 * 1000 for t, *_ in records]
                        self.assertEqual([p.time_ns for p in packets], expected)
                        self.assertEqual([p.orig_len for p in packets], [5, 1500, 0])
                        self.assertEqual([p.offset for p in packets], [24, 24 + 21, 24 + 21 + 29])
                        self.assertEqual({p.linktype for p in packets}, {101})
                    self.assertAlmostEqual(packets[0].time, (T0 + 123456789) / 1e9, places=5)

    def test_modified_pcap_of_old_linux_patches(self):
        for order in '<>':
            data = pcap([(T0 + 5000, b'one'), (T0, b'two')], linktype=capwriter.RAW, order=order, modified=True)
            self.assertEqual(capture_format(data), PCAP)
            packets, reader = read_all(data)
            self.assertEqual([(p.data, p.time_ns, p.offset) for p in packets],
                             [(b'one', T0 + 5000, 24), (b'two', T0, 24 + 27)])

    def test_packets_bigger_than_a_read(self):
        big = bytes(range(256)) * 800
        for data in (pcap([(T0, big), (T0, b'small'), (T0, big[::-1])], linktype=capwriter.RAW),
                     self.pcapng_of([big, b'small', big[::-1]])):
            packets, _ = read_all(data, stream=ShortReads(data, sizes=(4096, 1, 70000)))
            self.assertEqual([p.data for p in packets], [big, b'small', big[::-1]])

    @staticmethod
    def pcapng_of(datas):
        writer = Pcapng()
        writer.section()
        writer.interface(capwriter.RAW)
        for data in datas:
            writer.packet(0, T0, data)
        return writer.bytes()

    def test_cut_mid_packet_yields_everything_before(self):
        data = pcap([(T0, b'a' * 100), (T0, b'b' * 100)], linktype=capwriter.RAW)
        for cut in (len(data) - 1, len(data) - 100, 24 + 116 + 3):
            with self.subTest(cut=cut):
                packets, reader = read_all(data[:cut])
                self.assertEqual([p.data for p in packets], [b'a' * 100])
                self.assertEqual(reader.cut_at, 24 + 116)

    def test_cut_in_the_file_header(self):
        packets, reader = read_all(pcap([])[:10])
        self.assertEqual((packets, reader.cut_at), ([], 0))

    def test_ends_cleanly_at_a_record_boundary(self):
        packets, reader = read_all(pcap([(T0, b'x')]))
        self.assertEqual((len(packets), reader.cut_at), (1, None))

    def test_garbage_record_length_names_its_offset(self):
        data = pcap([(T0, b'x' * 10)], linktype=capwriter.RAW) + b'\xff' * 40
        reader = CaptureReader(io.BytesIO(data))
        packets = []
        with self.assertRaises(CaptureError) as caught:
            for packet in reader.packets():
                packets.append(packet)
        self.assertEqual(len(packets), 1)
        self.assertEqual(caught.exception.offset, 24 + 26)
        self.assertIn('at byte 50', str(caught.exception))
        self.assertNotIn('\n', str(caught.exception))

    def test_not_a_capture(self):
        with self.assertRaises(CaptureError) as caught:
            list(CaptureReader(io.BytesIO(b'{"time": 1}\n')).packets())
        self.assertIn('at byte 0', str(caught.exception))

    def test_reads_in_bounded_pieces_and_yields_before_the_end(self):
        """A huge capture is never read whole: the first packet comes out after at most one chunk."""
        record = pcap([(T0, b'p' * 1000)], linktype=capwriter.RAW)[24:]
        header = pcap([], linktype=capwriter.RAW)

        class Endless(io.RawIOBase):
            """A header, then the same record for ever."""
            read_so_far = 0

            def readable(self):
                return True

            def readinto(self, buffer):
                size = len(buffer)
                if Endless.read_so_far == 0:
                    piece = (header + record * (size // len(record) + 1))[:size]
                else:
                    skip = (Endless.read_so_far - len(header)) % len(record)
                    piece = (record * (size // len(record) + 2))[skip:skip + size]
                buffer[:size] = piece
                Endless.read_so_far += size
                return size

        stream = io.BufferedReader(Endless(), buffer_size=1 << 16)
        reader = CaptureReader(stream, chunk_size=1 << 16)
        count = 0
        for packet in reader.packets():
            count += 1
            if count == 1:
                self.assertLessEqual(Endless.read_so_far, 1 << 17)
            if count == 5000:
                break
        self.assertLessEqual(Endless.read_so_far, 5000 * len(record) + (1 << 17))


class PipeTest(unittest.TestCase):

    def test_each_packet_comes_out_as_soon_as_it_is_in_the_pipe(self):
        """From a pipe still open for writing, a packet is yielded without waiting for more bytes."""
        first, second = (pcap([(T0, b'packet %d' % i)], linktype=capwriter.RAW) for i in (1, 2))
        read_end, write_end = os.pipe()
        gave_up = threading.Event()

        def give_up():                         # only if the reader waits for more than the packet: the end
            gave_up.set()
            os.close(write_end)

        failsafe = threading.Timer(30, give_up)
        failsafe.start()
        try:
            with open(read_end, 'rb') as stream:
                os.write(write_end, first)
                packets = CaptureReader(stream).packets()
                self.assertEqual(next(packets).data, b'packet 1')
                os.write(write_end, second[24:])
                self.assertEqual(next(packets).data, b'packet 2')
                self.assertFalse(gave_up.is_set())
                failsafe.cancel()
                os.close(write_end)
                self.assertEqual(list(packets), [])
        finally:
            failsafe.cancel()


class PcapngTest(unittest.TestCase):

    def test_sections_interfaces_resolutions_and_blocks(self):
        writer = Pcapng()
        for order in '<>':
            writer.section(order)
            writer.block(0x00000BAD, b'an unknown block, skipped')
            micro = writer.interface(capwriter.RAW)
            nano = writer.interface(capwriter.ETHERNET, tsresol=9, comment=b'eth0')
            binary = writer.interface(capwriter.LINUX_SLL, tsresol=0x80 | 20)
            shifted = writer.interface(capwriter.RAW, tsresol=3, tsoffset=1000)
            writer.packet(micro, T0 + 1000, b'micro ' + order.encode())
            writer.packet(nano, T0 + 7, b'nano', original=1500)
            writer.packet(binary, T0 + 3250000000, b'binary')          # 3.25 s: exact in 2^-20
            writer.packet(shifted, T0 + 5000000, b'shifted')
            writer.obsolete_packet(nano, T0 + 9, b'obsolete')
            writer.simple_packet(b'simple')
            writer.block(5, b'\0' * 12)                                # interface statistics: skipped
        data = writer.bytes()
        packets, reader = read_all(data, prefix_size=4)
        self.assertEqual(reader.format, PCAPNG)
        self.assertIsNone(reader.cut_at)
        names = [b'nano', b'binary', b'shifted', b'obsolete', b'simple']
        self.assertEqual([p.data for p in packets], [b'micro <'] + names + [b'micro >'] + names)
        self.assertEqual([p.linktype for p in packets[:6]], [101, 1, 113, 101, 1, 101])
        expected = [T0 + 1000, T0 + 7, T0 + 3250000000, T0 + 5000000, T0 + 9, T0 + 9]   # simple: the time before
        self.assertEqual([p.time_ns for p in packets[:6]], expected)
        self.assertEqual([p.time_ns for p in packets[6:]], expected)
        self.assertEqual(packets[1].orig_len, 1500)
        self.assertEqual(packets[0].offset, 28 + 40 + 20 + 40 + 32 + 44)   # after the blocks before it

    def test_simple_packet_block_takes_the_snap_length(self):
        writer = Pcapng()
        writer.section()
        writer.interface(capwriter.RAW, snaplen=4)
        writer.simple_packet(b'abcdefgh')
        packets, _ = read_all(writer.bytes())
        self.assertEqual((packets[0].data, packets[0].orig_len), (b'abcd', 8))

    @staticmethod
    def one_packet_kept():
        """A pcapng with one raw IP interface and one packet, b'kept'."""
        writer = Pcapng()
        writer.section()
        writer.interface(capwriter.RAW)
        writer.packet(0, T0, b'kept')
        return writer

    def test_cut_mid_block(self):
        writer = self.one_packet_kept()
        whole = len(writer.bytes())
        writer.packet(0, T0, b'cut off')
        data = writer.bytes()
        for cut in (whole + 3, whole + 8, len(data) - 1):
            with self.subTest(cut=cut):
                packets, reader = read_all(data[:cut])
                self.assertEqual([p.data for p in packets], [b'kept'])
                self.assertEqual(reader.cut_at, whole)

    def test_bad_block_length_names_its_offset(self):
        writer = Pcapng()
        writer.section()
        writer.interface(capwriter.RAW)
        good = writer.bytes()
        for garbage, message in [(b'\x06\0\0\0\x0d\0\0\0' + b'\0' * 20, 'bad block length 13'),
                                 (b'\x06\0\0\0\x10\0\0\0' + b'\0' * 4 + b'\x11\0\0\0', 'block lengths differ')]:
            with self.subTest(message=message), self.assertRaises(CaptureError) as caught:
                read_all(good + garbage)
            self.assertEqual(str(caught.exception), 'not a capture: %s at byte %d' % (message, len(good)))

    def test_packet_of_an_undefined_interface(self):
        writer = Pcapng()
        writer.section()
        writer.interface(capwriter.RAW)
        writer.section('>')                     # a new section forgets the interfaces
        writer.interfaces = [(None, 0)]
        writer.packet(0, T0, b'x')
        with self.assertRaises(CaptureError) as caught:
            read_all(writer.bytes())
        self.assertIn('undefined interface 0', str(caught.exception))

    def test_cut_in_a_section_header(self):
        writer = self.one_packet_kept()
        whole = len(writer.bytes())
        writer.section('>')
        for cut in (whole + 4, whole + 10, whole + 20):
            packets, reader = read_all(writer.bytes()[:cut])
            self.assertEqual(([p.data for p in packets], reader.cut_at), ([b'kept'], whole))

    def test_bad_byte_order_magic(self):
        with self.assertRaises(CaptureError) as caught:
            read_all(b'\x0a\x0d\x0d\x0a\x1c\0\0\0' + b'\x01\x02\x03\x04' + b'\0' * 16)
        self.assertIn('at byte 8', str(caught.exception))


def decode(linktype, data):
    return PacketDecoder().decode(read_all(pcap([(T0, data)], linktype=linktype))[0][0])


class DecodeTest(unittest.TestCase):

    def assert_segment(self, segment, payload=b'hello', src='192.0.2.1', dst='192.0.2.2'):
        self.assertNotIn(segment, (None, IP_FRAGMENT))
        self.assertEqual((address_text(segment.src), segment.sport, address_text(segment.dst), segment.dport),
                         (src, 40000, dst, 5003))
        self.assertEqual((segment.seq, segment.ack, segment.flags), (1000, 2000, ACK))
        self.assertEqual((segment.payload, segment.cut), (payload, 0))

    def test_each_link_type(self):
        packet = one_tcp_packet()
        v6 = ipv6('2001:db8::1', '2001:db8::2', tcp_segment(40000, 5003, 1000, 2000, ACK, b'hello'))
        for linktype in (capwriter.ETHERNET, capwriter.LINUX_SLL, capwriter.LINUX_SLL2, capwriter.RAW,
                         capwriter.RAW_12, capwriter.RAW_14, capwriter.NULL, capwriter.LOOP):
            for order in '<>':
                with self.subTest(linktype=linktype, order=order):
                    self.assert_segment(decode(linktype, frame(linktype, packet, null_order=order)))
                    self.assert_segment(decode(linktype, frame(linktype, v6, null_order=order)),
                                        src='2001:db8::1', dst='2001:db8::2')

    def test_bsd_loopback_ipv6_families(self):
        v6 = ipv6('::1', '::1', tcp_segment(40000, 5003, 1000, 2000, ACK, b'hello'))
        for family in (24, 28, 30):
            for order in '<>':
                data = (family.to_bytes(4, 'little' if order == '<' else 'big')) + v6
                self.assert_segment(decode(capwriter.NULL, data), src='::1', dst='::1')

    def test_vlan_tags_single_and_stacked(self):
        for vlans in ([(0x8100, 10)], [(0x88A8, 100), (0x8100, 10)], [(0x8100, 1), (0x8100, 2), (0x8100, 3)]):
            for linktype in (capwriter.ETHERNET, capwriter.LINUX_SLL, capwriter.LINUX_SLL2):
                with self.subTest(vlans=vlans, linktype=linktype):
                    self.assert_segment(decode(linktype, frame(linktype, one_tcp_packet(), vlans)))

    def test_ipv4_options_and_ethernet_padding(self):
        packet = ipv4('192.0.2.1', '192.0.2.2', tcp_segment(40000, 5003, 1000, 2000, ACK, b'hello'),
                      options=b'\x94\x04\0\0' + b'\x01' * 8)
        self.assert_segment(decode(capwriter.ETHERNET, frame(capwriter.ETHERNET, packet) + b'\0' * 6))

    def test_ipv6_extension_headers(self):
        extensions = [(0, b'\x01\x02\0\0'), (43, b'\0' * 6 + b'\0' * 16), (60, b'\x01\x00'),
                      (44, b'\0\0\0\0\0\x07'), (51, b'\0' * 10)]
        v6 = ipv6('2001:db8::1', '2001:db8::2', tcp_segment(40000, 5003, 1000, 2000, ACK, b'hello'),
                  extensions=extensions)
        self.assert_segment(decode(capwriter.RAW, v6), src='2001:db8::1', dst='2001:db8::2')

    def test_fragments_are_reported_not_decoded(self):
        decoder = PacketDecoder()
        transport = tcp_segment(40000, 5003, 1000, 2000, ACK, b'hello')
        for packet in (ipv4('192.0.2.1', '192.0.2.2', transport, fragment=0x2000),
                       ipv4('192.0.2.1', '192.0.2.2', transport[:8], fragment=3),
                       ipv6('::1', '::2', transport, extensions=[(44, b'\0\x01\0\0\0\x07')]),
                       ipv6('::1', '::2', transport, extensions=[(44, b'\0\x10\0\0\0\x07')])):
            packet_record = read_all(pcap([(T0, packet)], linktype=capwriter.RAW))[0][0]
            self.assertIs(decoder.decode(packet_record), IP_FRAGMENT)
        self.assertEqual(decoder.fragments, 4)

    def test_non_tcp_and_short_packets_are_skipped(self):
        decoder = PacketDecoder()
        udp = ipv4('192.0.2.1', '192.0.2.2', b'\0' * 8 + b'dns', protocol=17)
        arp = b'\xff' * 12 + b'\x08\x06' + b'\0' * 28
        for linktype, data in [(capwriter.RAW, udp), (capwriter.ETHERNET, arp), (capwriter.ETHERNET, b'\0' * 5),
                               (capwriter.RAW, one_tcp_packet()[:30]), (capwriter.RAW, b''),
                               (capwriter.NULL, b'\x02\0'), (capwriter.NULL, b'\x07\0\0\0' + one_tcp_packet()),
                               (capwriter.RAW, b'\x44' + one_tcp_packet()[1:])]:      # a header length below 20
            packet = read_all(pcap([(T0, data)], linktype=linktype))[0][0]
            self.assertIsNone(decoder.decode(packet))
        self.assertEqual(decoder.skipped, 8)

    def test_snap_length_cut_is_counted(self):
        packet = one_tcp_packet(b'x' * 100)
        segment = decode(capwriter.ETHERNET, frame(capwriter.ETHERNET, packet)[:14 + 20 + 20 + 30])
        self.assertEqual((segment.payload, segment.cut), (b'x' * 30, 70))

    def test_offloaded_ip_length_zero_takes_what_was_captured(self):
        payload = b'hello ' * 1000
        packet = ipv4('192.0.2.1', '192.0.2.2', tcp_segment(40000, 5003, 1000, 2000, ACK, payload), total_length=0)
        self.assert_segment(decode(capwriter.RAW, packet), payload)

    def test_unknown_link_type_is_an_error_naming_it(self):
        for linktype, name in [(147, '147 (USER0)'), (4000, '4000')]:
            packet = read_all(pcap([(T0, b'x')], linktype=linktype))[0][0]
            with self.assertRaises(CaptureError) as caught:
                PacketDecoder().decode(packet)
            self.assertEqual(str(caught.exception), 'unsupported link type %s at byte 24' % name)


@unittest.skipUnless(shutil.which('tcpdump'), 'tcpdump is not installed')
class TcpdumpTest(unittest.TestCase):
    """Our writer's captures go through tcpdump (reading and rewriting a file, never capturing) and back."""

    def test_files_rewritten_by_tcpdump(self):
        records = [(T0 + i * 1000001000, frame(capwriter.ETHERNET, one_tcp_packet(b'message %d\n' % i)))
                   for i in range(20)]
        with tempfile.TemporaryDirectory() as folder:
            source = os.path.join(folder, 'ours.pcap')
            with open(source, 'wb') as out:
                out.write(pcap(records, order='>'))
            for options, resolution in [([], 1000), (['--time-stamp-precision=nano'], 1)]:
                rewritten = os.path.join(folder, 'tcpdump.pcap')
                subprocess.run(['tcpdump'] + options + ['-r', source, '-w', rewritten], check=True,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                with open(rewritten, 'rb') as stream:
                    packets = list(CaptureReader(stream).packets())
                decoder = PacketDecoder()
                self.assertEqual([decoder.decode(p).payload for p in packets],
                                 [b'message %d\n' % i for i in range(20)])
                self.assertEqual([p.time_ns for p in packets], [t // resolution * resolution for t, _ in records])


class DamagedCaptureTest(unittest.TestCase):
    """Any damage to a capture gives packets, then a CaptureError or a cut: never another exception."""

    def test_random_damage(self):
        rng = seeded_rng(self)
        v6 = ipv6('2001:db8::1', '2001:db8::2', tcp_segment(40000, 5003, 1000, 2000, ACK, b'hi'),
                  extensions=[(0, b'\0\0'), (44, b'\0' * 6)])
        frames = [frame(capwriter.ETHERNET, one_tcp_packet(b'x' * 50), [(0x8100, 1)]), frame(capwriter.ETHERNET, v6)]
        writer = Pcapng()
        for order in '<>':
            writer.section(order)
            writer.interface(capwriter.ETHERNET, tsresol=9, tsoffset=5)
            writer.interface(capwriter.ETHERNET, tsresol=0x80 | 30)
            for index, data in enumerate(frames * 3):
                writer.packet(index % 2, T0, data)
            writer.simple_packet(frames[0])
            writer.obsolete_packet(1, T0, frames[1])
        originals = [writer.bytes(), pcap([(T0, data) for data in frames * 3]),
                     pcap([(T0, data) for data in frames * 3], order='>', modified=True)]
        for round_ in range(300):
            data = bytearray(rng.choice(originals))
            for _ in range(rng.randrange(1, 6)):
                data[rng.randrange(len(data))] = rng.getrandbits(8)
            if rng.random() < 0.3:
                data = data[:rng.randrange(len(data))]
            with self.subTest(round=round_):
                self.read_damaged(bytes(data))

    def read_damaged(self, data):
        decoder = PacketDecoder()
        reassembler = Reassembler(5003)
        try:
            for packet in CaptureReader(ShortReads(data), chunk_size=512).packets():
                segment = decoder.decode(packet)
                if segment not in (None, IP_FRAGMENT):
                    reassembler.feed(segment, packet.time)
        except CaptureError as error:
            self.assertNotIn('\n', str(error))
        reassembler.finish()
