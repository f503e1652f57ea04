"""Built-in rule packs (data). Each sub-folder with a ``pack.yaml`` is a pack; see ``README.md``."""
