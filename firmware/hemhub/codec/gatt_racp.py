"""Record Access Control Point 0x2A52 (GSS "Record Access Control Point"; used
by PLXS 3.4 and the Glucose / CGM services): request encoder and response
decoder. A GATT link loads it only for a device that has an RACP (the
oximeter's stored spot checks); gatt.decode loads it for the first RACP value.
"""

try:
    from micropython import const
except ImportError:  # CPython

    def const(x):
        return x


from hemhub.codec import CodecError
from hemhub.codec.gatt import Reader
from hemhub.codec.names import word, word_index

# name tables: a word's position is its code ("-" = RFU)
_RACP_OPCODES = (
    "- report_stored_records delete_stored_records abort_operation "
    "report_number_of_stored_records number_of_stored_records_response response_code"
)
_RACP_OPERATORS = "null all less_or_equal greater_or_equal within_range first last"
_RACP_RESPONSES = (
    "- success op_code_not_supported invalid_operator operator_not_supported invalid_operand "
    "no_records_found abort_unsuccessful procedure_not_completed operand_not_supported"
)
_OP_ABORT = const(3)
_OP_NUMBER_RESPONSE = const(5)
_OP_RESPONSE_CODE = const(6)
_OPERATOR_NULL = const(0)


def _code(table, key, what):
    if isinstance(key, int) and not isinstance(key, bool):
        if word(table, key) is not None:
            return key
    elif isinstance(key, str) and key != "-":
        code = word_index(table, key)
        if code >= 0:
            return code
    raise CodecError("unknown RACP %s %r" % (what, key))


def _name(table, code):
    return word(table, code) or "reserved"


def encode_racp(opcode, operator="all", operand=b""):
    """RACP request -> bytes: op code | operator | operand (filter parameters).

    opcode: "report_stored_records" (1), "delete_stored_records" (2),
    "abort_operation" (3, operator must be "null"),
    "report_number_of_stored_records" (4); names or numbers.
    operator: "all", "first", "last" (no operand) or "less_or_equal",
    "greater_or_equal", "within_range" (operand = filter type + values, as the
    service defines, e.g. b"\\x01" + uint16 sequence number for Glucose).
    """
    op = _code(_RACP_OPCODES, opcode, "op code")
    if op > 4:
        raise CodecError("RACP op code %d is a response, not a request" % op)
    oper = _code(_RACP_OPERATORS, operator, "operator")
    if op == _OP_ABORT:
        if oper != _OPERATOR_NULL or operand:
            raise CodecError("RACP abort takes operator null and no operand")
    elif oper == _OPERATOR_NULL:
        raise CodecError("RACP op code %d needs an operator other than null" % op)
    elif (oper in (2, 3, 4)) != bool(operand):
        raise CodecError("RACP operator %d %s an operand" % (oper, "needs" if oper in (2, 3, 4) else "takes no"))
    return bytes((op, oper)) + bytes(operand)


def racp(data):
    """RACP indication from the server -> response dict.

    Number of Stored Records Response (5): operator null, uint16 count
    (uint32 accepted too) -> {"opcode": "number_of_stored_records_response", "count": n}.
    Response Code (6): operator null, request op code, response code value ->
    {"opcode": "response_code", "request_opcode", "request", "response_code", "response"}.
    """
    r = Reader(data, "Record Access Control Point")
    op = r.u8()
    oper = r.u8()
    if op not in (_OP_NUMBER_RESPONSE, _OP_RESPONSE_CODE):
        raise CodecError("RACP op code %d is not a response (expected 5 or 6)" % op)
    if oper != _OPERATOR_NULL:
        raise CodecError("RACP response operator must be null (0), got %d" % oper)
    out = {"characteristic": "record_access_control_point", "opcode": _name(_RACP_OPCODES, op), "observations": []}
    if op == _OP_NUMBER_RESPONSE:
        size = len(data) - 2
        if size not in (2, 4):
            raise CodecError("RACP number of records needs a 2- or 4-byte operand, got %d bytes" % size)
        out["count"] = r.uint(size)
    else:
        req = r.u8()
        code = r.u8()
        out["request_opcode"] = req
        out["request"] = _name(_RACP_OPCODES, req)
        out["response_code"] = code
        out["response"] = _name(_RACP_RESPONSES, code)
    r.end()
    return out
