"""The unsigned LEB128 integers of the WebAssembly binary format (section
sizes, name lengths, counts); standard library only."""


def read_uleb(data, i):
    """(the unsigned 32-bit LEB128 value at data[i], the index after it);
    ValueError if it runs off the end or past 32 bits."""
    value = shift = 0
    while True:
        if i >= len(data) or shift > 28:
            raise ValueError("malformed LEB128 number")
        byte = data[i]
        i += 1
        value |= (byte & 0x7F) << shift
        shift += 7
        if byte < 0x80:
            return value, i


def uleb(n):
    """`n` as unsigned LEB128."""
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)
