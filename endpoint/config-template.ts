/**
 * The other providers and the common options, commented out, after the active settings: what a
 * user edits `config.yaml` for, with every field named as the config schema names it.
 */
export const CONFIG_ALTERNATIVES = `
# ---------------------------------------------------------------------------------------------
# Everything else this file may say (docs/configuration.md has every field and its default).
# To run on a cluster, replace the provider block above with one of these:
#
# A Slurm cluster: each block is one batch job of nodesPerBlock nodes.
# provider:
#   type: slurm
#   partition: debug                # sbatch --partition
#   account: my-allocation          # sbatch --account
#   walltime: "01:00:00"            # of each block's job
#   nodesPerBlock: 1
#   workersPerNode: 8
#   minBlocks: 0                    # scale to nothing when idle
#   maxBlocks: 4
#   idleTimeoutSeconds: 120         # an idle block goes after this long
#   workerInit: |                   # shell lines run on the node before the workers start
#     module load python
#
# A PBS Pro / OpenPBS / Torque cluster:
# provider:
#   type: pbs
#   queue: debug                    # qsub -q
#   account: my-allocation          # qsub -A
#   walltime: "01:00:00"
#   nodesPerBlock: 1
#   cpusPerNode: 32
#   workersPerNode: 8
#   minBlocks: 0
#   maxBlocks: 4
#
# Every function in a container (docker, podman, or apptainer on HPC nodes):
# container:
#   runtime: docker
#
# The interpreter Python functions run in (a name on PATH after workerInit, or a path):
# python:
#   executable: python3
`;

/** A new config.yaml: a header, the settings given, then the commented alternatives. */
export function configTemplate(name: string, settings: string): string {
  return `# fabric-endpoint configuration of endpoint ${name}.\n# \`fabric-endpoint start ${name}\` reads it; edit it while the agent is stopped.\n\n${settings}${CONFIG_ALTERNATIVES}`;
}
