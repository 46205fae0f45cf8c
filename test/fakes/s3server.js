// S3 test peer: @20minutes/s3rver from build/npm on 127.0.0.1, checking SigV4 with its built-in
// S3RVER/S3RVER key pair. Usage: node test/fakes/s3server.js PORT DIRECTORY [ID:SECRET,...]
// With the third argument, those key pairs are the only valid ones (S3RVER is revoked): the
// key rotation test (test_reload_secrets.py) restarts it with another pair.
'use strict';

const path = require('path');

const root = path.resolve(__dirname, '..', '..');
const S3rver = require(path.join(root, 'build', 'npm', 'node_modules', '@20minutes', 's3rver'));

const port = Number(process.argv[2]);
const directory = process.argv[3];
if (!Number.isInteger(port) || port <= 0 || port > 65535 || !directory) {
  console.error('usage: s3server.js PORT DIRECTORY [ID:SECRET,...]');
  process.exit(2);
}
if (process.argv[4]) {
  const AWSAccount = require(path.join(root, 'build', 'npm', 'node_modules', '@20minutes', 's3rver', 'lib',
                                       'models', 'account'));
  AWSAccount.DUMMY_ACCOUNT.revokeAccessKey('S3RVER');
  for (const pair of process.argv[4].split(',')) {
    const i = pair.indexOf(':');
    AWSAccount.DUMMY_ACCOUNT.createKeyPair(pair.slice(0, i), pair.slice(i + 1));
  }
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
