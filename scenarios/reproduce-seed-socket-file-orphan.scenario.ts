/**
 * The seed's bug (d): its dupFileDescriptor: is a four-step exchange.
 * (1) the command binds a datagram socket to a temporary file and returns
 * it; (2) the client makes an anonymous socket; (3) the client sends the fd
 * to the bound socket; (4) the command receives it, closes the socket and
 * deletes the file. A helper that dies between (3) and (4) never deletes it:
 * the socket file outlives it. A faithful port, with a real helper process
 * (node, the native binding) that binds in this scenario's directory (the
 * seed used /tmp) and is SIGKILLed between the steps: the check that no
 * socket file is left must fail. (fdbridge over a socketpair leaves none:
 * kill-child-mid-transfer.)
 */
import { strict as assert } from 'node:assert';
import { spawn } from 'node:child_process';
import { existsSync, lstatSync } from 'node:fs';
import { join } from 'node:path';

import { makeMemfd } from '../src';
import { constants, native, packageRoot } from '../src/native';
import type { Scenario } from '../harness/types';
import { closeAll, sleep } from './support/common';

/** The command's side of the seed: steps (1) and (4). */
const SEED_HELPER = `
const { native } = require(process.argv[1]);
const path = process.argv[2];
// (1) makeTemporayDatagramSocket: bind a datagram socket to a file.
const sock = native.listen(native.constants.SOCK_DGRAM, path, false, -1, 0);
process.stdout.write('bound\\n');
// (4) receiveFileDescriptorViaSocket: receive, close, delete the file.
process.stdin.once('data', () => {
  const m = native.recvNow(sock, 1, 1);
  native.close(sock);
  require('node:fs').unlinkSync(path);
  process.stdout.write('received ' + (m ? m.fds.length : 0) + '\\n');
  process.exit(0);
});
`;

/**
 * Runs the four steps with a fresh seed helper binding `path`; when
 * `dieBetweenSteps`, the helper is SIGKILLed after (3). Resolves with the
 * helper's last word ('received N') or the signal that ended it.
 */
async function exchange(path: string, dieBetweenSteps: boolean): Promise<string> {
  const helper = spawn(process.execPath, ['-e', SEED_HELPER, join(packageRoot, 'dist', 'src', 'native.js'), path], {
    stdio: ['pipe', 'pipe', 'inherit'],
  });
  let said = '';
  helper.stdout.setEncoding('utf8').on('data', (d: string) => (said += d));
  const exited = new Promise<string>((resolve) =>
    helper.once('exit', (code, signal) => resolve(signal ?? said.trim().split('\n').pop() ?? String(code))),
  );
  const fd = makeMemfd('seed-exchange');
  let client = -1;
  try {
    for (let i = 0; i < 500 && !said.includes('bound') && helper.exitCode === null; i++) await sleep(10);
    assert.ok(lstatSync(path).isSocket(), '(1) the helper bound a socket file');
    // (2) an anonymous socket here, (3) the fd sent to the helper's socket.
    client = native.connect(constants.SOCK_DGRAM, path, false);
    assert.equal(native.sendNow(client, Buffer.alloc(1), [fd]), 1);
    if (dieBetweenSteps) helper.kill('SIGKILL');
    // (4) (if it is still alive)
    else helper.stdin.write('go\n');
    return await exited;
  } finally {
    closeAll([fd, ...(client >= 0 ? [client] : [])]);
    helper.stdin.destroy();
    if (helper.exitCode === null && helper.signalCode === null) helper.kill('SIGKILL');
    await exited;
  }
}

const scenario: Scenario = {
  name: 'reproduce-seed-socket-file-orphan',
  description: "a faithful port of the seed's four-step exchange leaves its bound datagram socket file behind when the helper dies between the steps; the check must fail",
  transports: ['child'],
  expect: 'fail',
  tags: ['seed-bug'],
  async run(ctx) {
    // The whole exchange first: the port does delete its file when nobody dies.
    const whole = join(ctx.tmpdir, `fd${ctx.rng.int(0, 1e9)}.socket`);
    assert.equal(await exchange(whole, false), 'received 1');
    assert.equal(existsSync(whole), false, 'the complete exchange removed its socket file');
    // Now the helper dies between (3) and (4).
    const path = join(ctx.tmpdir, `fd${ctx.rng.int(0, 1e9)}.socket`);
    assert.equal(await exchange(path, true), 'SIGKILL');
    assert.equal(existsSync(path), false, `the socket file ${path} outlived the helper that bound it`);
  },
};

export default scenario;
