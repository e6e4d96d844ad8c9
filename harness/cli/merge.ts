/**
 * `fdbridge merge a.json b.json ... [--json FILE] [--html FILE]`: one report
 * from the results files of a sharded run (`fdbridge run --shard i/n`), as
 * Playwright's merge-reports does for its shards. Prints the environment of
 * each shard and the summary of the whole run. Exit status 1 if a merged row
 * failed, as `run` would have; shards that do not make one run (seed or
 * scenario set differ, a shard or a row missing or doubled) are an error
 * listing every reason (exit status 3), and nothing is written.
 */
import { MergeError, mergeResults, type ShardFile } from '../merge';
import { summaryTable } from '../summary';
import type { ResultsFile } from '../types';
import { writeFileAtomic } from '../write-file';
import { readResults } from './compare';
import { writeHtml } from './run';
import { EXIT, parseSubcommandArgs, UsageError } from './usage';

export const USAGE = `merge SHARD.json... [--json FILE] [--html FILE]
      One results file and report from the results of \`run --shard i/n\` (every shard, any order).

  --json FILE   write the merged results
  --html FILE   write the merged HTML report

exit status: 0 every merged row passed; 1 a row failed; 2 usage error; 3 the shards do not make
one run (seed, options or scenario set differ, a shard or a row missing or doubled; every reason
is listed and nothing is written) or a file cannot be read.`;

function readShard(path: string): ShardFile {
  const results = readResults(path);
  if (typeof results.options !== 'object' || results.options === null) {
    throw new Error(`${path} is not a results file of fdbridge run (no "options")`);
  }
  return { file: path, results };
}

export async function main(argv: string[]): Promise<number> {
  const { values, positionals } = parseSubcommandArgs(argv, { json: { type: 'string' }, html: { type: 'string' } }, { positionals: true });
  if (positionals.length === 0) throw new UsageError('merge needs the results files of the shards');
  let merged: ResultsFile;
  try {
    merged = mergeResults(positionals.map(readShard));
  } catch (err) {
    if (!(err instanceof MergeError)) throw err;
    process.stderr.write(`fdbridge merge: ${err.message}\n`);
    return EXIT.error;
  }
  const out = (line: string): void => void process.stdout.write(`${line}\n`);
  const shards = merged.shards ?? [];
  out(`fdbridge merge: ${shards.length} shard${shards.length === 1 ? '' : 's'}, seed ${merged.options.seed}, ${merged.results.length} rows`);
  for (const s of shards) {
    const e = s.environment;
    out(
      `  shard ${s.index}/${s.count}  ${s.rows} rows, ${s.failedRows} failed  node ${e.node}, kernel ${e.kernel}, ${e.cores} x ${e.cpuModel}` +
        `${e.hostname ? `, host ${e.hostname}` : ''}  (${s.file})`,
    );
  }
  out('');
  out(summaryTable(merged));
  if (values.json !== undefined) {
    writeFileAtomic(values.json, `${JSON.stringify(merged, null, 2)}\n`);
    out(`wrote ${values.json}`);
  }
  if (values.html !== undefined) {
    writeHtml(merged, values.html);
    out(`wrote ${values.html}`);
  }
  return merged.results.some((r) => r.status === 'fail') ? EXIT.failed : EXIT.ok;
}
