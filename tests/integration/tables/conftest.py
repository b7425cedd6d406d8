from tests.support.postmap import postmap  # noqa: F401 - pytest finds fixtures by name
