"""The one table of the replies filterd itself gives, most severe first.

Tests import these constants; reply texts come from here, never from an exception's text.
"""

from __future__ import annotations

from filterd.model.reply import Reply

# --- session-ending (421) -------------------------------------------------------------------
TOO_MANY_CONNECTIONS = Reply(421, "4.7.0", "Error: too many connections, try again later")
TOO_MANY_ERRORS = Reply(421, "4.7.0", "Error: too many errors")
TIMEOUT = Reply(421, "4.4.2", "Error: timeout exceeded")
SHUTTING_DOWN = Reply(421, "4.3.2", "Service shutting down, try again later")
LINE_TOO_LONG_FATAL = Reply(421, "4.7.0", "Error: command line too long, closing connection")

# --- transient failures (4xx): never cost a sender mail -------------------------------------
INTERNAL_ERROR = Reply(451, "4.3.0", "Error: internal error, try again later")
QUEUE_WRITE = Reply(451, "4.3.0", "Error: queue file write error")
NEXT_HOP_DOWN = Reply(451, "4.4.1", "Error: next hop unavailable, try again later")
NEXT_HOP_TIMEOUT = Reply(451, "4.4.2", "Error: timeout talking to the next hop, try again later")
NEXT_HOP_PROTOCOL = Reply(451, "4.5.0", "Error: next hop protocol error, try again later")
PARTIAL_DELIVERY = Reply(
    451, "4.5.0", "Error: delivery failed for some recipients, try again later"
)
INSUFFICIENT_STORAGE = Reply(452, "4.3.1", "Error: insufficient system storage")
TOO_MANY_RECIPIENTS = Reply(452, "4.5.3", "Error: too many recipients")
TLS_UNAVAILABLE = Reply(454, "4.7.0", "TLS not available due to temporary reason")

# --- permanent failures (5xx) ---------------------------------------------------------------
UNRECOGNIZED = Reply(502, "5.5.2", "Error: command not recognized")
NOT_IMPLEMENTED = Reply(502, "5.5.1", "Error: command not implemented")
SYNTAX = Reply(501, "5.5.2", "Error: syntax error")
LINE_TOO_LONG = Reply(500, "5.5.2", "Error: line too long")
BAD_SEQUENCE = Reply(503, "5.5.1", "Error: bad sequence of commands")
NEED_HELO = Reply(503, "5.5.1", "Error: send HELO/EHLO first")
NEED_MAIL = Reply(503, "5.5.1", "Error: need MAIL command")
NEED_RCPT = Reply(503, "5.5.1", "Error: need RCPT command")
NESTED_MAIL = Reply(503, "5.5.1", "Error: nested MAIL command")
XFORWARD_IN_TRANSACTION = Reply(503, "5.5.1", "Error: MAIL transaction in progress")
XFORWARD_DENIED = Reply(550, "5.7.0", "Error: insufficient authorization")
BAD_SENDER_SYNTAX = Reply(501, "5.1.7", "Bad sender address syntax")
BAD_RCPT_SYNTAX = Reply(501, "5.1.3", "Bad recipient address syntax")
BAD_PARAMETER = Reply(555, "5.5.4", "Unsupported option")
TOO_BIG_DECLARED = Reply(552, "5.3.4", "Message size exceeds fixed limit")
TOO_BIG = Reply(552, "5.3.4", "Error: message file too big")
TEXT_LINE_TOO_LONG = Reply(500, "5.5.2", "Error: message line too long")
BARE_LF = Reply(550, "5.5.2", "Error: bare <LF> or <CR> received")
SMTPUTF8_REQUIRED = Reply(553, "5.6.7", "Error: non-ASCII address requires SMTPUTF8")
PIPELINING_VIOLATION = Reply(554, "5.5.0", "Error: SMTP protocol synchronization")
RELAY_DENIED = Reply(554, "5.7.1", "Relay access denied")  # text prefixed with "<rcpt>: "
STARTTLS_INJECTION = Reply(554, "5.5.0", "Error: data pipelined after STARTTLS")
NO_VALID_RECIPIENTS = Reply(554, "5.5.1", "Error: no valid recipients")
MAILBOX_UNAVAILABLE = Reply(550, "5.1.1", "Recipient address rejected: mailbox unavailable")

# --- SMTP AUTH (RFC 4954), worded as Postfix's smtpd --------------------------------------
AUTH_TEMPORARY = Reply(454, "4.7.0", "Temporary authentication failure")  # + ": reason"
AUTH_FAILED = Reply(535, "5.7.8", "Error: authentication failed")  # + ": reason"
AUTH_ABORTED = Reply(501, "5.7.0", "Authentication aborted")
AUTH_SYNTAX = Reply(501, "5.5.4", "Syntax: AUTH mechanism")
AUTH_NEEDS_TLS = Reply(504, "5.5.4", "Encryption required for requested authentication mechanism")
AUTH_ALREADY = Reply(503, "5.5.1", "Error: already authenticated")
AUTH_IN_TRANSACTION = Reply(503, "5.5.1", "Error: MAIL transaction in progress")
SASL_TOO_LONG = Reply(500, "5.5.6", "SASL response limit exceeded")
AUTH_OK = Reply(235, "2.7.0", "Authentication successful")

# --- positive -------------------------------------------------------------------------------
OK = Reply(250, "2.0.0", "Ok")
SENDER_OK = Reply(250, "2.1.0", "Ok")
RCPT_OK = Reply(250, "2.1.5", "Ok")
RESET_OK = Reply(250, "2.0.0", "Ok")
XFORWARD_OK = Reply(250, "2.0.0", "Ok")
VRFY_CANNOT = Reply(252, "2.0.0", "Cannot VRFY user, but will accept message and attempt delivery")
HELP = Reply(214, "2.0.0", "See RFC 5321")
BYE = Reply(221, "2.0.0", "Bye")
START_DATA = Reply(354, "", "End data with <CR><LF>.<CR><LF>")
READY_TLS = Reply(220, "2.0.0", "Ready to start TLS")


# --- one answer for several recipients ---------------------------------------------------------


def collapse_replies(per_recipient: list[Reply]) -> Reply:
    """One SMTP reply for a message whose recipients got separate results (LMTP next hop or
    Maildir, SMTP client). The rule: no recipient may be both acknowledged and lost.

    - every recipient succeeded → the first success;
    - every recipient failed → the first transient failure if any (retry is always safe),
      else the first permanent one;
    - mixed success and failure → 451 4.5.0: the client keeps the message and retries all
      recipients, so those already delivered may get a duplicate, but none is lost.
    """
    if not per_recipient:
        return INTERNAL_ERROR
    successes = [r for r in per_recipient if r.is_positive]
    if len(successes) == len(per_recipient):
        return successes[0]
    if successes:
        return PARTIAL_DELIVERY
    transient = [r for r in per_recipient if r.is_transient]
    return transient[0] if transient else per_recipient[0]
