s/^checked .*/checked (counts masked)/
s/snapshot [a-z0-9]{12}/snapshot <id>/g
s#snapshots/[a-z0-9]{12}#snapshots/<id>#g
s/layer [a-z0-9]{12} /layer <id> /g
s/process [0-9]+ /process <pid> /g
s/cache entry [0-9a-f]{64}/cache entry <key>/g
s#image-layers/[0-9a-f]{64}#image-layers/<id>#g
s#blobs/sha256/[0-9a-f]{64}#blobs/sha256/<hex>#g
