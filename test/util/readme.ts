/** The README's code blocks, for the tests that compile and run them. */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';

import { packageRoot } from '../../src/paths';

/** The code of the README's block between `<!-- NAME:start -->` and `<!-- NAME:end -->`. */
export function readmeBlock(name: string): string {
  const readme = readFileSync(join(packageRoot, 'README.md'), 'utf8');
  const m = new RegExp(`<!-- ${name}:start -->\\s*\`\`\`ts\\n([\\s\\S]*?)\`\`\`\\s*<!-- ${name}:end -->`).exec(readme);
  if (!m?.[1]) throw new Error(`README.md has no ${name} block`);
  return m[1];
}
