/**
 * Run profiles: which scenarios a run selects (by tag) and the limits that
 * suit them. `fdbridge run --profile NAME`; 'default' is what `npm start` runs.
 *
 * To add one: add an entry here; scenarios opt in through their tags.
 */
import type { Scenario } from './types';

export interface Profile {
  name: string;
  description: string;
  /** Whether a scenario belongs to this profile. */
  select(scenario: Scenario): boolean;
  /** Per-row time limit (ms) unless --timeout is given. */
  timeoutMs: number;
}

const has = (s: Scenario, tag: string): boolean => (s.tags ?? []).includes(tag);

export const PROFILES: readonly Profile[] = [
  {
    name: 'default',
    description: "every scenario without the tags 'fault' or 'soak'",
    select: (s) => !has(s, 'fault') && !has(s, 'soak'),
    timeoutMs: 30_000,
  },
  {
    name: 'faults',
    description: "scenarios tagged 'fault': peers killed mid-transfer, hostile input, fd limits",
    select: (s) => has(s, 'fault'),
    timeoutMs: 30_000,
  },
  {
    name: 'soak',
    description: "scenarios tagged 'soak': long mixed workloads",
    select: (s) => has(s, 'soak'),
    timeoutMs: 30 * 60_000,
  },
  {
    name: 'all',
    description: 'every scenario',
    select: () => true,
    timeoutMs: 30 * 60_000,
  },
];

/** The profile named `name`; throws a RangeError naming the known ones otherwise. */
export function profileByName(name: string): Profile {
  const p = PROFILES.find((x) => x.name === name);
  if (!p) throw new RangeError(`unknown profile ${name}; use one of ${PROFILES.map((x) => x.name).join(', ')}`);
  return p;
}
