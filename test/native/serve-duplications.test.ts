/**
 * The command's side of the frame protocol answered in C++: with
 * serveDuplications on, a well-formed DUP request gets its DUP_OK from the
 * native layer (no JS callback), its fds join the socket's given set, and
 * everything else still reaches the message handler, in order.
 */
import { fdIdentity, makeMemfd, openFdTable, sameFile } from '../../src/fd';
import { native } from '../../src/native';
import { encodeDup, encodeJson, FrameType, HEADER_BYTES } from '../../src/protocol';
import { UnixSocket } from '../../src/socket';
import { withScope, type Scope } from './helpers';

/** A served socket (the command's side) and a plain peer (the client's side). */
function pair(scope: Scope): { served: UnixSocket; client: UnixSocket; handled: Array<{ type: number; fds: number[] }> } {
  const [served, client] = UnixSocket.pair('seqpacket', { reuseBuffer: true });
  scope.add(served);
  scope.add(client);
  const handled: Array<{ type: number; fds: number[] }> = [];
  served.setMessageHandler((err, data, fds) => {
    if (err) throw err;
    handled.push({ type: (data as Buffer)[0] as number, fds: [...(fds as number[])] });
    scope.ownAll(fds as number[]);
  });
  served.serveDuplications(true);
  return { served, client, handled };
}

function dupRequest(id: number): Buffer {
  const frame = encodeDup(0);
  frame.writeUInt32LE(id, 4);
  return frame;
}

test('a DUP is answered natively with the received fds, which join the given set', () =>
  withScope(async (scope) => {
    const { served, client, handled } = pair(scope);
    const a = scope.own(makeMemfd('a')).fd;
    const b = scope.own(makeMemfd('b')).fd;
    await client.send(dupRequest(0xdeadbeef), [a, b, a]);
    const reply = await client.receive();
    expect(reply.fds).toEqual([]);
    expect(reply.data.length).toBe(HEADER_BYTES + 12);
    expect(reply.data[0]).toBe(FrameType.DUP_OK);
    expect(reply.data.readUInt32LE(4)).toBe(0xdeadbeef);
    const remote = [0, 1, 2].map((i) => reply.data.readInt32LE(HEADER_BYTES + 4 * i));
    expect(sameFile(remote[0]!, a)).toBe(true);
    expect(sameFile(remote[1]!, b)).toBe(true);
    expect(sameFile(remote[2]!, a)).toBe(true);
    expect(handled).toEqual([]);
    expect(served.servedDuplications).toBe(1);
    expect(served.given.size).toBe(3);
    // Adopting takes one out of the given set (the adopter closes it); a
    // sweep closes the rest.
    expect(served.given.adopt(remote[1]!)).toBe(true);
    expect(served.given.adopt(remote[1]!)).toBe(false);
    scope.own(remote[1]!);
    expect(served.given.sweep()).toBe(2);
    expect(openFdTable().has(remote[0]!)).toBe(false);
    expect(openFdTable().has(remote[2]!)).toBe(false);
    expect(fdIdentity(remote[1]!).type).toBe('file');
  }));

test('anything but a well-formed DUP goes to the handler, in order; so does every DUP once turned off', () =>
  withScope(async (scope) => {
    const { served, client, handled } = pair(scope);
    const a = scope.own(makeMemfd('a')).fd;
    const withPayload = Buffer.concat([dupRequest(1), Buffer.from([0])]);
    const flagged = dupRequest(2);
    flagged[1] = 1;
    native.sendNow(client.fd, withPayload, [a]);
    native.sendNow(client.fd, dupRequest(3), [a]); // served
    native.sendNow(client.fd, flagged, [a]);
    native.sendNow(client.fd, dupRequest(4), []); // no fds: not a DUP the native side answers
    native.sendNow(client.fd, encodeJson(FrameType.CALL, 5, { method: 'x', args: [] }));
    const reply = await client.receive();
    expect(reply.data.readUInt32LE(4)).toBe(3);
    await new Promise((r) => setTimeout(r, 20));
    expect(handled.map((h) => h.type)).toEqual([FrameType.DUP, FrameType.DUP, FrameType.DUP, FrameType.CALL]);
    expect(handled.map((h) => h.fds.length)).toEqual([1, 1, 0, 0]);
    served.serveDuplications(false);
    native.sendNow(client.fd, dupRequest(6), [a]);
    await new Promise((r) => setTimeout(r, 20));
    expect(handled.map((h) => h.type)).toEqual([FrameType.DUP, FrameType.DUP, FrameType.DUP, FrameType.CALL, FrameType.DUP]);
    expect(served.servedDuplications).toBe(1);
  }));

test('closing the socket closes the given fds nobody adopted', () =>
  withScope(async (scope) => {
    const { served, client } = pair(scope);
    const a = scope.own(makeMemfd('a')).fd;
    await client.send(dupRequest(7), [a, a, a, a]);
    const reply = await client.receive();
    const remote = [0, 1, 2, 3].map((i) => reply.data.readInt32LE(HEADER_BYTES + 4 * i));
    for (const fd of remote) expect(openFdTable().has(fd)).toBe(true);
    served.given.add(scope.own(makeMemfd('added')).release());
    served.close();
    for (const fd of remote) expect(openFdTable().has(fd)).toBe(false);
    expect(served.given.size).toBe(0);
  }));
