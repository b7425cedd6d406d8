"""Teaching spamd's Bayes database (``TELL``, what ``spamc -L spam|ham`` does).

spamd must run with ``--allow-tell``. The message file is sent as it is (SpamAssassin reads LF
and CRLF messages alike).
"""

from __future__ import annotations

import os
import ssl

import trio

from filterd.sdk.spamd import MessageClass, SpamdClient, SpamdResponse, Tell

from .config import parse_address


async def learn(
    address: str,
    path: str | os.PathLike[str],
    spam: bool,
    *,
    user: str | None = None,
    ssl_context: ssl.SSLContext | None = None,
) -> SpamdResponse:
    """Learn the message in ``path`` as spam (``spam=True``) or ham, for spamd at ``address``
    (``host:port``, ``[v6]:port`` or ``unix:/path``).

    The response's ``did_set`` is ``{"local"}`` when spamd learnt it, and empty when there was
    nothing to do (already learnt as that class). Failures raise ``SpamdError`` (e.g. ``69
    Service Unavailable: TELL commands are not enabled`` without ``--allow-tell``) or
    ``OSError`` for the file; TELL takes no timeout: wrap the call in ``trio.fail_after``.
    """
    data = await trio.Path(path).read_bytes()
    client = SpamdClient(parse_address(address), 1, ssl_context)
    tell = Tell.learn(MessageClass.SPAM if spam else MessageClass.HAM)
    return await client.tell(data, len(data), tell, user=user)
