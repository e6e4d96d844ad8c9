/**
 * How the harness reaches a `remote` command on this machine: `fdbridge
 * serve --stdio` of this checkout, through a via that stays its parent as
 * ssh does (a fault scenario can kill the via and lose the channel while
 * the server lives on, until its stdin ends).
 */
import { join } from 'node:path';

import type { ConnectOptions } from '../src';
import { packageRoot } from '../src/paths';

export const LOCAL_REMOTE: Readonly<Pick<ConnectOptions, 'via' | 'serve'>> = Object.freeze({
  via: ['sh', '-c', '"$@"', 'sh'],
  serve: [process.execPath, join(packageRoot, 'dist', 'harness', 'cli.js'), 'serve', '--stdio'],
});
