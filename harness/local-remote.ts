/**
 * How the harness reaches a `remote` command: `fdbridge serve --stdio` of
 * this checkout, through a via that stays its parent as ssh does (a fault
 * scenario can kill the via and lose the channel while the server lives
 * on, until its stdin ends). $FDBRIDGE_REMOTE_VIA (words separated by
 * spaces, e.g. `ssh -o BatchMode=yes 127.0.0.1 --`) replaces that via: the
 * remote column then runs through it.
 */
import { join } from 'node:path';

import type { ConnectOptions } from '../src';
import { packageRoot } from '../src/paths';

const fromEnv = process.env['FDBRIDGE_REMOTE_VIA']?.trim();

export const LOCAL_REMOTE: Readonly<Required<Pick<ConnectOptions, 'via' | 'serve'>>> = Object.freeze({
  via: fromEnv ? fromEnv.split(/\s+/) : ['sh', '-c', '"$@"', 'sh'],
  serve: [process.execPath, join(packageRoot, 'dist', 'harness', 'cli.js'), 'serve', '--stdio'],
});
