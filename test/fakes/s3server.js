// S3 test peer: @20minutes/s3rver from build/npm on 127.0.0.1, checking SigV4 with its built-in
// S3RVER/S3RVER key pair. Usage: node test/fakes/s3server.js PORT DIRECTORY
'use strict';

const path = require('path');

const root = path.resolve(__dirname, '..', '..');
const S3rver = require(path.join(root, 'build', 'npm', 'node_modules', '@20minutes', 's3rver'));

const port = Number(process.argv[2]);
const directory = process.argv[3];
if (!Number.isInteger(port) || port <= 0 || port > 65535 || !directory) {
  console.error('usage: s3server.js PORT DIRECTORY');
  process.exit(2);
}

const server = new S3rver({
  address: '127.0.0.1',
  port,
  directory,
  silent: true,
  // Mismatched signatures must fail: the tests rely on a wrong secret being refused.
  allowMismatchedSignatures: false,
  // Addresses like 127.0.0.1:14569 are never read as virtual-host buckets; say so anyway.
  vhostBuckets: false,
});

server.run().then(
  (addr) => console.log(`s3server listening on ${addr.address}:${addr.port}`),
  (err) => {
    console.error(`s3server: ${err.message}`);
    process.exit(1);
  },
);

for (const sig of ['SIGTERM', 'SIGINT']) {
  process.on(sig, () => server.close().finally(() => process.exit(0)));
}
