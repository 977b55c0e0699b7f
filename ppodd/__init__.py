"""ppodd: Progressive Poster Dataset Distillation (P-PoDD) and PoDD as a batch tool.

Layers, each a subpackage, data flowing one way: `config` → `datasets` → `method` → `storage` →
`cell` → `report` and `cluster` → `cli`. A section sign (§N, §N.M) or a discrepancy label (Dn) in
a docstring, a comment or the command-line help cites docs/method.md, the method as this project
implements it.
"""

__version__ = "0.2.0"
