/** A command-line mistake: reported with the usage text and exit status 2. */
export class UsageError extends Error {}
