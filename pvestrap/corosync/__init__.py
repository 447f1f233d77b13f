"""corosync.conf and corosync's status outputs, one module per job (none imports one above it):

- tree: parse a corosync.conf into an ordered tree and write it back (its own layout, or pvecm's)
- derive: the ClusterPlan a file describes, and where each field sits in the file
- facade: CorosyncConf, validated domain edits, and the one writer of a new cluster's file
- lint: every problem with an existing file, at its line
- status: parsers for corosync-quorumtool, corosync-cfgtool and corosync-cmapctl output
"""
