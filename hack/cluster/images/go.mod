// SPDX-License-Identifier: Apache-2.0
module blixt.dev/hack/cluster/images

go 1.26.0
