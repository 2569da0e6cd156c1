"""Packed name tables for the codecs.

A name table is one string of words separated by single spaces; a word's
position is its code (or bit number), "-" marks an unused position. One
string costs a fraction of the RAM of a tuple of strings on MicroPython (each
long literal would be its own heap object), and a word is only sliced out
when a decoder returns it.
"""


def word(names, index):
    """The index-th word of a name table, or None (out of range or "-")."""
    if index < 0:
        return None
    pos = 0
    for _ in range(index):
        pos = names.find(" ", pos) + 1
        if pos == 0:
            return None
    end = names.find(" ", pos)
    w = names[pos:] if end < 0 else names[pos:end]
    return None if w == "-" else w


def word_index(names, w):
    """Position of word w in a name table, or -1."""
    i = 0
    pos = 0
    n = len(names)
    while pos <= n:
        end = names.find(" ", pos)
        if end < 0:
            end = n
        if end - pos == len(w) and names[pos:end] == w:
            return i
        pos = end + 1
        i += 1
    return -1


def bit_names(value, names, first_bit=0):
    """Names of the set bits of value; word k of the table is bit first_bit + k."""
    out = []
    pos = 0
    bit = first_bit
    n = len(names)
    while pos < n:
        end = names.find(" ", pos)
        if end < 0:
            end = n
        if (value >> bit) & 1:
            w = names[pos:end]
            if w != "-":
                out.append(w)
        pos = end + 1
        bit += 1
    return tuple(out)
