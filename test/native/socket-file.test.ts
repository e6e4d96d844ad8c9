/**
 * The socket-file rules (src/socket-file.ts) called directly, as every
 * socket that binds a name uses them (the helper daemon's listener, a bound
 * datagram socket), against what another local user can put in the way: a
 * directory they can write, one of theirs, their symlink on the way, a
 * socket of theirs at the name (live, bound and not listening yet, of
 * another kind, in another network namespace, with a full backlog), a file
 * where a socket was, a name swapped between the probe and the unlink, a
 * socket file another filesystem gives the same inode number. Where a mode
 * decides, every mode is tried. The jest setup checks the open-fd table
 * after every test (the probe's connection included).
 */
import { spawn } from 'node:child_process';
import { lstatSync, unlinkSync } from 'node:fs';
import { join, relative } from 'node:path';

import { FdBridgeError } from '../../src/errors';
import { bindReplacingStale } from '../../src/socket-file';
import { exitOf } from '../util/processes';
import { constants, native } from './binding';
import { withScope } from './helpers';

/** bindReplacingStale binding a socket of `type` at `path`: 'bound' (the socket closed at once) or what it threw. */
function tryBind(path: string, type: number, inUse: Error): unknown {
  try {
    native.close(bindReplacingStale(path, type, () => native.listen(type, path, false, 0o600, 16), () => inUse));
    return 'bound';
  } catch (err) {
    return err;
  }
}

interface HeldSocket {
  path: string;
  kind: 'seqpacket' | 'dgram';
  listen?: boolean;
  backlog?: number;
  /** A datagram socket connected to this path after its bind. */
  connectTo?: string;
}

const HOLDER = `
import json, socket, sys
kinds = {'seqpacket': socket.SOCK_SEQPACKET, 'dgram': socket.SOCK_DGRAM}
held = []
for spec in json.loads(sys.argv[1]):
    s = socket.socket(socket.AF_UNIX, kinds[spec['kind']])
    s.bind(spec['path'])
    if spec.get('listen'): s.listen(spec.get('backlog', 16))
    if spec.get('connectTo'): s.connect(spec['connectTo'])
    held.append(s)
print('ready', flush=True)
sys.stdin.read()
`;

/**
 * Another process (python3) that binds the sockets of `specs` and keeps them
 * until stop(), after which their files are stale. `prefix`: a command to
 * run it under (`unshare -n`: in a network namespace of its own).
 */
async function holdSockets(specs: readonly HeldSocket[], prefix: readonly string[] = []): Promise<{ stop(): Promise<void> }> {
  const argv = [...prefix, 'python3', '-c', HOLDER, JSON.stringify(specs)];
  const child = spawn(argv[0] as string, argv.slice(1), { stdio: ['pipe', 'pipe', 'pipe'] });
  let stderr = '';
  child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
  const stop = async (): Promise<void> => {
    child.stdin.end();
    await exitOf(child);
  };
  try {
    await new Promise<void>((resolve, reject) => {
      child.stdout.once('data', () => resolve());
      child.once('exit', (code) => reject(new Error(`${argv[0]} exited (${code}) before its sockets were bound: ${stderr}`)));
    });
  } catch (err) {
    await stop();
    throw err;
  }
  return { stop };
}

describe('bindReplacingStale: a dead process\'s socket file is replaced, nobody else\'s name is taken', () => {
  const IN_USE = new FdBridgeError('ERR_FDBRIDGE_ADDRESS_IN_USE', 'in use (the test)');

  test('sockets of another process that are not listening: bound only, of another kind (EPROTOTYPE), or a datagram socket connected elsewhere (EPERM), at names with any characters, by an absolute or a relative path; stale once it has exited', () =>
    withScope(async (s) => {
      const dir = s.dir();
      const names = ['plain.sock', 'one space.sock', 'two  spaces.sock', 'tab\there.sock', 'new\nline.sock', ' leading.sock', 'trailing.sock '];
      const specs: HeldSocket[] = [{ path: join(dir, 'peer.sock'), kind: 'dgram' }];
      for (const name of names) specs.push({ path: join(dir, name), kind: 'seqpacket' });
      specs.push({ path: relative(process.cwd(), join(dir, 'bound relative.sock')), kind: 'seqpacket' });
      specs.push({ path: join(dir, 'dgram.sock'), kind: 'dgram' });
      specs.push({ path: join(dir, 'connected.sock'), kind: 'dgram', connectTo: join(dir, 'peer.sock') });
      const holder = await holdSockets(specs);
      const probes: Array<{ path: string; type: number }> = [
        ...names.map((name) => ({ path: join(dir, name), type: constants.SOCK_SEQPACKET })),
        // Bound by a relative path, probed by the same one (from the same working directory); bound by an absolute path, probed by a relative one.
        { path: relative(process.cwd(), join(dir, 'bound relative.sock')), type: constants.SOCK_SEQPACKET },
        { path: relative(process.cwd(), join(dir, 'plain.sock')), type: constants.SOCK_SEQPACKET },
        { path: join(dir, 'dgram.sock'), type: constants.SOCK_SEQPACKET },
        { path: join(dir, 'connected.sock'), type: constants.SOCK_DGRAM },
      ];
      const before = probes.map(({ path }) => lstatSync(path).ino);
      try {
        const results = probes.map(({ path, type }) => [path, tryBind(path, type, IN_USE)]);
        expect(results).toEqual(probes.map(({ path }) => [path, IN_USE]));
        expect(probes.map(({ path }) => lstatSync(path).ino)).toEqual(before);
      } finally {
        await holder.stop();
      }
      const results = probes.map(({ path, type }) => {
        const result = [path, tryBind(path, type, IN_USE)];
        unlinkSync(path);
        return result;
      });
      expect(results).toEqual(probes.map(({ path }) => [path, 'bound']));
    }));
});
