"""Lets `inv` see the same task tree as `fab`: both load the fabfile collection.

(Invoke finds its collection before it reads any project config, so
invoke.yaml cannot point it elsewhere; this one-line module does.)
"""

from fabfile import ns  # noqa: F401
