"""filterd.testing: run plugins through the real chain runner, without any server.

```python
from filterd.testing import run_plugin
result = await run_plugin(MyPlugin, {"threshold": 5}, message=raw_bytes,
                          mail_from="a@example.com", rcpts=["b@example.org"])
assert result.returned("on_message") == Continue(edits=(AddHeader("X-Checked", "yes"),))
assert b"X-Checked: yes" in result.message
```

See docs/plugins.md, "Testing a plugin".
"""

from filterd.chain.registry import PluginError
from filterd.errors import ConfigError
from filterd.model.envelope import Xforwarded
from filterd.testing.harness import (
    ScanResult,
    load_message,
    make_plugin,
    run_chain,
    run_plugin,
    validate_config,
)

__all__ = [
    "ConfigError",
    "PluginError",
    "ScanResult",
    "Xforwarded",
    "load_message",
    "make_plugin",
    "run_chain",
    "run_plugin",
    "validate_config",
]
